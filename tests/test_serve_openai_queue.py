"""comm-serve's queue and slots, on a stand-in model whose answers take as long as the test needs.

The server runs in this process (uvicorn in a thread, loopback, a free port); the stand-in streams one piece
every few milliseconds and records whether it was cancelled, so hang-ups and a full queue are seen exactly.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from _openai_helpers import ROOT, get, post

from comm_tower.inference.generation import GenerationConfig
from comm_tower.serve.openai_app import create_app
from comm_tower.serve.openai_engine import Engine
from comm_tower.serve.openai_schema import ApiError, ServeLimits, parse_chat_request

PIECE_S = 0.01
BODY = {"model": "stand-in", "messages": [{"role": "user", "content": "count"}], "max_tokens": 2000}


class SlowStream:
    """`max_new_tokens` pieces 'x', one every PIECE_S seconds, until cancelled (or failing, if asked)."""

    def __init__(self, tokens: int, fail: bool) -> None:
        self.tokens, self.fail = tokens, fail
        self.cancelled = threading.Event()
        self.new_tokens = 0

    def __iter__(self) -> Iterator[str]:
        for _ in range(self.tokens):
            if self.cancelled.is_set():
                return
            if self.fail:
                raise RuntimeError("CUDA out of memory (stand-in)")
            time.sleep(PIECE_S)
            self.new_tokens += 1
            yield "x"

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def finish_reason(self) -> str:
        return "cancelled" if self.cancelled.is_set() else "length"


class StandIn:
    """What the engine uses of an `Assistant`: prompt ids, their positions, pixels and a stream."""

    context_len = 4096

    def __init__(self) -> None:
        self.streams: list[SlowStream] = []

    def prompt_ids(self, turns) -> list[int]:
        return [1] * len(turns[-1].content.split())

    def positions(self, ids) -> int:
        return len(ids)

    def pixels(self, image):
        return None

    def stream(self, ids, pixels, size, gen: GenerationConfig) -> SlowStream:
        self.streams.append(SlowStream(gen.max_new_tokens or 10, fail="fail" in str(gen.stop)))
        return self.streams[-1]


@contextlib.contextmanager
def serving(max_concurrency: int) -> Iterator[tuple[str, StandIn, Engine]]:
    model = StandIn()
    engine = Engine(model, max_concurrency)
    app = create_app(engine, ServeLimits("stand-in"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", model, engine
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.close()
        sock.close()


def open_stream(url: str) -> http.client.HTTPConnection:
    """Start a streamed request and read up to its first piece of text; the connection stays open."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({**BODY, "stream": True}))
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(10):
        if b'"content": "x"' in resp.fp.readline():
            return conn
    raise AssertionError("no piece of text arrived")


def wait_for(url: str, check, within: float = 10.0) -> dict:
    """/health once `check(health)` holds (bounded)."""
    stop_at = time.monotonic() + within
    while True:
        state = get(url, "/health")[1]
        if check(state) or time.monotonic() > stop_at:
            return state
        time.sleep(0.05)


def test_full_queue_is_429_and_hanging_up_frees_the_slot():
    with serving(max_concurrency=2) as (url, model, _engine):
        running = open_stream(url)  # slot 1: generating, one piece at a time
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        queued = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        queued.request("POST", "/v1/chat/completions", body=json.dumps(BODY))  # slot 2: waits its turn
        assert wait_for(url, lambda s: s["active"] == 2)["active"] == 2
        status, reply = post(url, BODY)
        assert status == 429 and reply["error"]["type"] == "rate_limit_error"
        assert "--max-concurrency" in reply["error"]["message"]
        queued.close()  # hangs up while waiting: its slot is freed and its job skipped, never run
        assert wait_for(url, lambda s: s["active"] == 1)["active"] == 1
        running.close()  # hangs up mid-stream: its generation ends at the next piece
        state = wait_for(url, lambda s: s["active"] == 0 and s["cancelled"] >= 2)
        assert state["active"] == 0 and state["cancelled"] == 2 and state["completed"] == 0
        assert len(model.streams) == 1  # the queued request never reached the model
        assert model.streams[0].cancelled.is_set() and model.streams[0].new_tokens < BODY["max_tokens"]
        status, reply = post(url, {**BODY, "max_tokens": 3})
        assert status == 200 and reply["choices"][0]["message"]["content"] == "xxx"


def test_a_failing_generation_is_a_500_and_the_server_goes_on():
    with serving(max_concurrency=2) as (url, _, _engine):
        status, reply = post(url, {**BODY, "stop": ["fail"]})
        assert status == 500 and reply["error"]["type"] == "server_error"
        assert "out of memory" in reply["error"]["message"]
        status, reply = post(url, {**BODY, "max_tokens": 2})
        assert status == 200 and reply["choices"][0]["message"]["content"] == "xx"
        state = get(url, "/health")[1]
        assert state["failed"] == 1 and state["active"] == 0


def test_flags_are_checked_before_loading_and_help_imports_no_torch():
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "comm_tower.serve.openai_server",
            *["--model-path", "/x", "--max-concurrency", "0"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "comm-serve: error: --max-concurrency 0: must be at least 1"
    ]
    code = (
        "import sys; from comm_tower.serve.openai_server import build_parser; build_parser().format_help();"
        "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'transformers') if m in sys.modules))"
    )
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert light.stdout.strip() == "[]", light.stderr


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([1, 2], None),
        ({"messages": []}, "model"),
        ({"model": "stand-in"}, "messages"),
        ({"model": "stand-in", "messages": "hi"}, "messages"),
        ({"model": "stand-in", "messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),
        ({"model": "stand-in", "messages": [{"role": "tool", "content": "hi"}]}, "messages[0].role"),
        ({"model": "stand-in", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "stand-in", "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"model": "stand-in", "messages": [{"role": "user", "content": "<image>\nhi"}]},
            "messages[0].content",
        ),
        (
            {"model": "stand-in", "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
            "temperature",
        ),
        ({"model": "stand-in", "messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
        ({"model": "stand-in", "messages": [{"role": "user", "content": "hi"}], "stop": ["a"] * 5}, "stop"),
        ({"model": "stand-in", "messages": [{"role": "user", "content": "hi"}], "seed": 1.5}, "seed"),
        ({"model": "stand-in", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"model": "stand-in", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ],
)
def test_odd_request_shapes_are_400_naming_the_field(body, param):
    with pytest.raises(ApiError) as err:
        parse_chat_request(body, ServeLimits("stand-in"))
    assert err.value.status == 400 and err.value.param == param
