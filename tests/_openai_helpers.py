"""comm-serve in a subprocess for the tests: started on a free loopback port, stopped at the end."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START_S = 180  # a cold start on two shared cores: imports, model load, 4-bit quantisation


@contextlib.contextmanager
def comm_serve(args: list[str], log: Path) -> Iterator[str]:
    """Run `comm-serve ARGS --port 0` (one torch thread) and yield its /v1 URL once it serves."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "comm_tower.serve.openai_server",
        *args,
        *["--host", "127.0.0.1", "--port", "0"],
    ]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        try:
            try:
                line = lines.get(timeout=START_S)
            except queue.Empty:
                line = ""
            if " at http://" not in line:
                proc.kill()
                raise RuntimeError(f"comm-serve did not start: {line!r}\n{log.read_text()[-3000:]}")
            yield line.rsplit(" at ", 1)[1].strip()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)


def post(
    base_url: str, body: Any, key: str | None = None, path: str = "/chat/completions"
) -> tuple[int, dict]:
    """POST `body` (a dict as JSON, or raw bytes) to the server; (status, JSON reply)."""
    host, port = base_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        conn.request("POST", f"/v1{path}", body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def get(base_url: str, path: str) -> tuple[int, dict]:
    """GET a path of the server (e.g. '/health'); (status, JSON reply)."""
    host, port = base_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()
