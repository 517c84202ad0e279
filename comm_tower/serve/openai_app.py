"""The HTTP side of comm-serve (FastAPI): OpenAI's routes, the API key, JSON errors, server-sent events.

`POST /v1/chat/completions`, `GET /v1/models`, `GET /health`. A request takes a slot of the engine's queue
for as long as it waits, runs or streams; a client that hangs up gives it back at once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from comm_tower.serve.openai_engine import Engine, Job
from comm_tower.serve.openai_schema import ApiError, ChatRequest, ServeLimits, parse_chat_request

logger = logging.getLogger(__name__)
POLL_S = 0.25  # how often a waiting request checks that its client is still there
MAX_BODY = 64 * 2**20  # bytes of one request (a few large images as data: URIs)


def error_response(err: ApiError) -> JSONResponse:
    """OpenAI's error JSON with the error's status."""
    return JSONResponse(err.body(), status_code=err.status)


class _SlotStream(StreamingResponse):
    """A streamed answer that cancels its job and gives its slot back however the response ends."""

    def __init__(self, content: AsyncIterator[str], job: Job, engine: Engine) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.job, self.engine = job, engine

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()  # a no-op once the answer is complete
            self.engine.release()


def create_app(engine: Engine, limits: ServeLimits, api_key: str | None = None) -> FastAPI:
    """The FastAPI app answering for `engine`'s model under `limits`."""
    app = FastAPI(title="comm-serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(ApiError(err.status_code, f"{request.method} {request.url.path}: {err.detail}"))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(400, str(err)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return error_response(ApiError(500, f"internal error: {err}", type="server_error"))

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(
                401,
                "wrong or missing API key: send the one the server was started with (--api-key) as "
                "'Authorization: Bearer KEY'",
                "authorization",
                code="invalid_api_key",
            )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": limits.model_id, **asdict(engine.counts)}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        card = {"id": limits.model_id, "object": "model", "created": 0, "owned_by": "comm-tower"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        check_key(request)
        if not engine.admit():
            raise ApiError(
                429,
                f"the server is busy: {engine.max_concurrency} requests already wait or run "
                "(--max-concurrency); retry shortly",
                code="rate_limit_exceeded",
                type="rate_limit_error",
            )
        handed_over = False
        try:
            body = await _json(request)
            req = await run_in_threadpool(parse_chat_request, body, limits)  # decoding images takes a while
            job = engine.submit(req)
            try:
                event = await _next(job, request)
                if event is None:
                    return JSONResponse({}, status_code=499)  # nobody is listening any more
                if event[0] == "error":
                    return error_response(event[1])
                prompt_tokens = event[1]
                if req.stream:
                    handed_over = True
                    return _SlotStream(_sse(job, req, limits.model_id, prompt_tokens), job, engine)
                return await _whole(job, request, limits.model_id, prompt_tokens)
            finally:
                if not handed_over:
                    job.cancel()
        finally:
            if not handed_over:
                engine.release()

    return app


async def _json(request: Request) -> Any:
    """The request's JSON body, read up to MAX_BODY bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(
                413, f"the request body is over {MAX_BODY // 2**20} MiB; send smaller images", "body"
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(
            400, f"the request body is not valid JSON ({err}); send a JSON object", "body"
        ) from None


async def _next(job: Job, request: Request) -> tuple | None:
    """The job's next event; None if the client hung up meanwhile (the job is then cancelled).

    The client is looked for every POLL_S seconds, whether events arrive or not.
    """
    state = request.state
    while True:
        try:
            event = await asyncio.wait_for(job.events.get(), POLL_S)
        except asyncio.TimeoutError:
            event = None
        now = time.monotonic()
        if now - getattr(state, "seen_client", 0.0) >= POLL_S:
            state.seen_client = now
            if await request.is_disconnected():
                job.cancel()
                return None
        if event is not None:
            return event


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


async def _whole(job: Job, request: Request, model_id: str, prompt_tokens: int) -> Any:
    """A non-streamed answer: OpenAI's chat.completion object."""
    pieces: list[str] = []
    while (event := await _next(job, request)) is not None:
        if event[0] == "piece":
            pieces.append(event[1])
        elif event[0] == "error":
            return error_response(event[1])
        elif event[0] == "done":
            reason, tokens = event[1], event[2]
            message = {"role": "assistant", "content": "".join(pieces)}
            return {
                "id": _completion_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_id,
                "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
                "usage": _usage(prompt_tokens, tokens),
            }
    return JSONResponse({}, status_code=499)


async def _sse(job: Job, req: ChatRequest, model_id: str, prompt_tokens: int) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, one chunk per text piece, a finish chunk, usage if asked, [DONE]."""
    head = {"id": _completion_id(), "object": "chat.completion.chunk", "created": int(time.time())}
    head["model"] = model_id

    def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    while True:
        event = await job.events.get()
        if event[0] == "piece":
            yield chunk({"content": event[1]})
        elif event[0] == "error":
            yield f"data: {json.dumps(event[1].body())}\n\n"
            return
        elif event[0] == "done":
            yield chunk({}, event[1])
            if req.include_usage:
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(prompt_tokens, event[2])})}\n\n"
            yield "data: [DONE]\n\n"
            return
