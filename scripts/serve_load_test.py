"""Load test for a running comm-serve: concurrent clients, mixed streaming, bad inputs, early hang-ups.

    python scripts/serve_load_test.py --base-url http://127.0.0.1:8000/v1 --image red.png \
        --question "What is in the image?" --expect "A red square."

Each of --clients threads sends --requests requests through the `openai` client (raw HTTP for bad JSON and
for streams it hangs up on after the first piece). Every good request must be answered exactly once with
--expect (default: the server's own greedy answer, asked first), every bad one refused with its 4xx, no
response may be a 5xx, and /health must report no request left and none failed. Prints requests/s, p50/p99
latency and tokens/s; exits 1 if a check fails. Bounded: --timeout per request, --deadline for the run.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

# one cycle of request kinds: half good (streamed or not), some bad, some hung up on mid-stream
KINDS = (
    "good", "stream", "bad_remote_url", "good", "disconnect", "stream", "bad_image", "good",
    "bad_max_tokens", "stream", "bad_json", "disconnect", "bad_model", "good", "bad_key", "stream",
)  # fmt: skip
BAD_STATUS = {
    "bad_remote_url": 400,
    "bad_image": 400,
    "bad_max_tokens": 400,
    "bad_json": 400,
    "bad_model": 404,
    "bad_key": 401,
}


@dataclass
class Outcome:
    """What one request got."""

    kind: str
    ok: bool
    status: int | None = None
    latency: float = 0.0
    tokens: int = 0
    note: str = ""


@dataclass
class Run:
    """The settings shared by every client thread."""

    base_url: str
    api_key: str
    model: str
    image_uri: str
    question: str
    expect: str
    timeout: float
    max_tokens: int
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self, image_url: str | None = None) -> list[dict]:
        parts = [
            {"type": "image_url", "image_url": {"url": image_url or self.image_uri}},
            {"type": "text", "text": self.question},
        ]
        return [{"role": "user", "content": parts}]

    def client(self, api_key: str | None = None):
        from openai import OpenAI

        return OpenAI(
            base_url=self.base_url, api_key=api_key or self.api_key, max_retries=0, timeout=self.timeout
        )


def ask(run: Run, client, kind: str) -> Outcome:
    """Send one request of `kind` and judge what came back."""
    import openai

    start = time.perf_counter()
    try:
        if kind in ("bad_json", "disconnect"):
            return raw(run, kind, start)
        args = {"model": run.model, "messages": run.messages(), "max_tokens": run.max_tokens}
        if kind == "bad_remote_url":
            args["messages"] = run.messages("https://example.com/cat.png")
        elif kind == "bad_image":
            args["messages"] = run.messages(
                "data:image/png;base64," + base64.b64encode(b"not a png").decode()
            )
        elif kind == "bad_max_tokens":
            args["max_tokens"] = 0
        elif kind == "bad_model":
            args["model"] = "no-such-model"
        elif kind == "bad_key":
            client = run.client(api_key="sk-wrong")
        if kind == "stream":
            pieces, finishes, tokens = [], 0, 0
            stream = client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **args
            )
            for chunk in stream:
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    pieces.append(choice.delta.content or "")
                    finishes += choice.finish_reason is not None
            text = "".join(pieces)
            ok = text == run.expect and finishes == 1
            return Outcome(kind, ok, 200, time.perf_counter() - start, tokens, "" if ok else repr(text))
        out = client.chat.completions.create(**args)
        text = out.choices[0].message.content
        ok = kind == "good" and text == run.expect and len(out.choices) == 1
        return Outcome(kind, ok, 200, time.perf_counter() - start, out.usage.completion_tokens, repr(text))
    except openai.APIStatusError as err:
        ok = BAD_STATUS.get(kind) == err.status_code
        return Outcome(kind, ok, err.status_code, time.perf_counter() - start, note=str(err)[:200])
    except Exception as err:  # a failed request is a finding of the test, reported with the others
        return Outcome(kind, False, None, time.perf_counter() - start, note=f"{type(err).__name__}: {err}")


def raw(run: Run, kind: str, start: float) -> Outcome:
    """Bad JSON, or a stream hung up on after its first piece of text (plain HTTP, for control)."""
    url = urllib.parse.urlparse(run.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=run.timeout)
    headers = {"Authorization": f"Bearer {run.api_key}", "Content-Type": "application/json"}
    try:
        if kind == "bad_json":
            conn.request("POST", f"{url.path}/chat/completions", body=b'{"model": ', headers=headers)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            ok = resp.status == BAD_STATUS[kind] and body["error"]["param"] == "body"
            return Outcome(kind, ok, resp.status, time.perf_counter() - start)
        body = {"model": run.model, "messages": run.messages(), "max_tokens": run.max_tokens, "stream": True}
        conn.request("POST", f"{url.path}/chat/completions", body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            return Outcome(kind, False, resp.status, time.perf_counter() - start, note=resp.read()[:200])
        for _ in range(50):  # up to the first piece of text, then hang up
            line = resp.fp.readline()
            if not line or (b'"content": "' in line and b'"content": ""' not in line):
                break
        return Outcome(kind, True, 200, time.perf_counter() - start)
    finally:
        conn.close()


def client_loop(run: Run, index: int, requests: int, stop_at: float) -> None:
    """One client: its share of the kinds, one after another, until done or past the deadline."""
    client = run.client()
    for r in range(requests):
        if time.monotonic() > stop_at:
            outcome = Outcome("deadline", False, note="the run passed --deadline")
        else:
            outcome = ask(run, client, KINDS[(index * requests + r) % len(KINDS)])
        with run.lock:
            run.outcomes.append(outcome)


def health(base_url: str, timeout: float) -> dict:
    """GET /health of the server behind `base_url`."""
    url = urllib.parse.urlparse(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return {"http_status": resp.status, **json.loads(resp.read())}
    finally:
        conn.close()


def settled_health(base_url: str, timeout: float, within: float = 15.0) -> dict:
    """/health once no request is left in the server (hung-up streams may still be winding down)."""
    stop_at = time.monotonic() + within
    while True:
        state = health(base_url, timeout)
        if state.get("active") == 0 or time.monotonic() > stop_at:
            return state
        time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summarize(run: Run, wall: float, before: dict, after: dict) -> dict:
    """The figures and the checks of a finished run."""
    good = [o for o in run.outcomes if o.kind in ("good", "stream")]
    latencies = [o.latency for o in good if o.ok]
    tokens = sum(o.tokens for o in good if o.ok)
    failures = [o for o in run.outcomes if not o.ok]
    server_errors = [o for o in run.outcomes if o.status is not None and o.status >= 500]
    completed = after.get("completed", 0) - before.get("completed", 0)
    return {
        "requests": len(run.outcomes),
        "good": len(good),
        "bad": sum(o.kind in BAD_STATUS for o in run.outcomes),
        "disconnected": sum(o.kind == "disconnect" for o in run.outcomes),
        "failures": len(failures),
        "failure_notes": [f"{o.kind} {o.status} {o.note}" for o in failures[:10]],
        "server_errors": len(server_errors),
        "seconds": round(wall, 3),
        "requests_per_s": round(len(run.outcomes) / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 4) if latencies else None,
        "p99_latency_s": round(percentile(latencies, 99), 4) if latencies else None,
        "tokens_per_s": round(tokens / wall, 1),
        "server_completed": completed,
        "healthy_after": after.get("http_status") == 200 and after.get("status") == "ok",
        "active_after": after.get("active"),
        "server_failed": after.get("failed", 0) - before.get("failed", 0),
    }


def passed(summary: dict, expected_requests: int) -> bool:
    """Every request judged right, none a 5xx, the server healthy and idle with no failure."""
    return (
        summary["requests"] == expected_requests
        and summary["failures"] == 0
        and summary["server_errors"] == 0
        and summary["healthy_after"]
        and summary["active_after"] == 0
        and summary["server_failed"] == 0
        and summary["server_completed"] >= summary["good"]
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True, help="the server's /v1 URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default="none", help="the server's --api-key (if it has one)")
    p.add_argument("--model", default=None, help="model id (default: the one GET /v1/models lists)")
    p.add_argument("--image", required=True, type=Path, help="image sent with every good request")
    p.add_argument("--question", default="What is in the image?")
    p.add_argument("--expect", default=None, help="the right answer (default: the server's greedy answer)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=8, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds the whole run may take")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    host = urllib.parse.urlparse(args.base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"load test: --base-url {args.base_url}: only loopback servers are load tested", file=sys.stderr
        )
        return 2
    image_uri = "data:image/png;base64," + base64.b64encode(args.image.read_bytes()).decode()
    run = Run(args.base_url, args.api_key, args.model or "", image_uri, args.question, "", args.timeout, 0)
    run.max_tokens = args.max_tokens
    client = run.client()
    run.model = args.model or client.models.list().data[0].id
    if args.expect is None:
        reply = client.chat.completions.create(
            model=run.model, messages=run.messages(), max_tokens=args.max_tokens
        )
        args.expect = reply.choices[0].message.content
    run.expect = args.expect
    before = health(args.base_url, args.timeout)
    stop_at = time.monotonic() + args.deadline
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        futures = [pool.submit(client_loop, run, c, args.requests, stop_at) for c in range(args.clients)]
        wait(futures, timeout=args.deadline + args.timeout)
    wall = time.perf_counter() - start
    summary = summarize(run, wall, before, settled_health(args.base_url, args.timeout))
    ok = passed(summary, args.clients * args.requests)
    print(
        f"{summary['requests']} requests ({summary['good']} good, {summary['bad']} bad, "
        f"{summary['disconnected']} hung up) from {args.clients} clients in {summary['seconds']} s: "
        f"{summary['requests_per_s']} requests/s, latency p50 {summary['p50_latency_s']} s "
        f"p99 {summary['p99_latency_s']} s, {summary['tokens_per_s']} tokens/s; "
        f"{summary['failures']} failures, {summary['server_errors']} server errors, "
        f"healthy after: {summary['healthy_after']}; {'PASS' if ok else 'FAIL'}"
    )
    for note in summary["failure_notes"]:
        print(f"  failed: {note}")
    if args.json:
        print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
