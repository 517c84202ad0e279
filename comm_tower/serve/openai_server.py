"""`comm-serve` / `python -m comm_tower.serve.openai_server`: an OpenAI-compatible API for a COMM model.

    comm-serve --model-path ckpt/comm-7b --load-4bit --port 8000

Serves `POST /v1/chat/completions` (text and image_url parts, streaming), `GET /v1/models` and `GET /health`
on 127.0.0.1 unless --host says otherwise. One model answers the requests in turn from a queue of at most
--max-concurrency; images come inline as data: URIs (file:// only with --allow-local-files; never
downloaded). Answers are comm-chat's: the checkpoint's chat format, greedy unless a temperature is asked.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from comm_tower.errors import UsageError, run_command
from comm_tower.inference.flags import (
    add_generation_arguments,
    add_model_arguments,
    check_generation_arguments,
    generation_config,
)

API_KEY_ENV = "COMM_SERVE_API_KEY"
SHUTDOWN_S = 5  # on Ctrl-C, open streams get this long to finish before they are cut


def build_parser() -> argparse.ArgumentParser:
    """comm-chat's model and decoding flags, plus where to listen, the queue size and the API key."""
    p = argparse.ArgumentParser(prog="comm-serve", description=__doc__.split("\n")[0])
    add_model_arguments(p)
    p.add_argument(
        "--model-name", default=None, help="model id clients send (default: the --model-path folder's name)"
    )
    add_generation_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=16,
        help="requests that may wait or run at once; more get HTTP 429 (default: 16)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on /v1 routes (default: ${API_KEY_ENV}, else none)",
    )
    p.add_argument(
        "--allow-local-files",
        action="store_true",
        help="accept image_url file:// paths (off: only inline data: URIs)",
    )
    p.add_argument("--debug", action="store_true", help="log prompts, requests and library messages")
    return p


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first bad flag as a one-line message naming it, or None."""
    bad = check_generation_arguments(args)
    if bad:
        return bad
    if args.max_concurrency < 1:
        return f"--max-concurrency {args.max_concurrency}: must be at least 1"
    if not 0 <= args.port <= 65535:
        return f"--port {args.port}: must be in 0..65535"
    if args.api_key is not None and not args.api_key.strip():
        return "--api-key is empty; pass a key or leave the flag out"
    return None


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), so clients queue while the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UsageError(
            f"--host {host} --port {port}: cannot listen there ({err.strerror}); pick another port"
        ) from None
    sock.listen(128)
    return sock


def main(argv: list[str] | None = None) -> int:
    """`comm-serve`: bad flags or checkpoints stop with one line and exit code 2."""
    return run_command("comm-serve", _main, argv)


def _main(argv: list[str] | None) -> int:
    """Parse flags, load the model, then serve until Ctrl-C."""
    args = build_parser().parse_args(argv)
    from comm_tower.serve.cli import load_assistant, setup_logging

    setup_logging(args.debug, "comm-serve")
    bad = check_arguments(args)
    if bad:
        raise UsageError(bad)
    try:
        import uvicorn

        from comm_tower.serve.openai_app import create_app
    except ImportError as err:
        raise UsageError(
            f"{err.name or err} is not installed; fix: pip install 'comm-tower[serve]'"
        ) from None
    from comm_tower.serve.openai_engine import Engine
    from comm_tower.serve.openai_schema import ServeLimits

    sock = listen(args.host, args.port)
    assistant = load_assistant(args)
    model_id = args.model_name or os.path.basename(os.path.normpath(args.model_path))
    limits = ServeLimits(model_id, 1, args.allow_local_files, generation_config(args))
    engine = Engine(assistant, args.max_concurrency)
    app = create_app(engine, limits, args.api_key)
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    print(f"comm-serve: serving '{model_id}' at http://{url_host}:{port}/v1", flush=True)
    config = uvicorn.Config(
        app,
        log_level="info" if args.debug else "warning",
        access_log=args.debug,
        timeout_graceful_shutdown=SHUTDOWN_S,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
