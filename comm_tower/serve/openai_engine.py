"""One model, one queue: requests wait their turn and are answered one at a time by a worker thread.

The worker asks the model through `Assistant` (comm-chat's path: recorded chat format, pixels, generate
arguments, streaming, stop strings). Each job reports to its request's event loop: 'start' (prompt size),
'piece' (text), 'done' (finish reason, tokens) or 'error'. A cancelled job (client gone) is skipped if it
still waits, and its generation ends at the next token if it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from comm_tower.inference.assistant import Assistant
from comm_tower.serve.openai_schema import ApiError, ChatRequest

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """A request on its way through the queue; events reach `events` on the request's loop."""

    request: ChatRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    stream: Any = None

    def send(self, *event: Any) -> None:
        """Hand an event to the request's loop (from the worker thread)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is shutting down
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        """The client is gone: skip the job, or end its generation at the next token."""
        self.cancelled.set()
        stream = self.stream
        if stream is not None:
            stream.cancel()


@dataclass
class Counters:
    """What /health reports."""

    active: int = 0
    completed: int = 0
    cancelled: int = 0
    refused: int = 0
    failed: int = 0


class Engine:
    """The model's queue: at most `max_concurrency` requests waiting or running; a worker answers them in turn."""

    def __init__(self, assistant: Assistant, max_concurrency: int) -> None:
        self.assistant = assistant
        self.max_concurrency = max_concurrency
        self.counts = Counters()
        self._lock = threading.Lock()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="comm-serve-worker", daemon=True)
        self._worker.start()

    def admit(self) -> bool:
        """Take a slot for a new request; False when `max_concurrency` requests already wait or run."""
        with self._lock:
            if self.counts.active >= self.max_concurrency:
                self.counts.refused += 1
                return False
            self.counts.active += 1
            return True

    def release(self) -> None:
        """Give a request's slot back (once, when its response is finished or its client gone)."""
        with self._lock:
            self.counts.active -= 1

    def submit(self, request: ChatRequest) -> Job:
        """Queue `request`; its events arrive on the running loop."""
        job = Job(request, asyncio.get_running_loop())
        self._jobs.put(job)
        return job

    def close(self) -> None:
        """Stop the worker after the job it is on."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                self._count("cancelled")
                continue
            try:
                self._answer(job)
            except ApiError as err:
                job.send("error", err)
            except Exception as err:  # a request never takes the server down: report it and go on
                logger.exception("request failed")
                self._count("failed")
                job.send("error", ApiError(500, f"generation failed: {err}", type="server_error"))

    def _answer(self, job: Job) -> None:
        req, assistant = job.request, self.assistant
        try:
            ids = assistant.prompt_ids(req.turns)
        except ValueError as err:
            raise ApiError(400, f"messages: {err}", "messages") from None
        positions = assistant.positions(ids)
        if positions >= assistant.context_len:
            raise ApiError(
                400,
                f"the prompt takes {positions} of the model's {assistant.context_len} positions (image "
                "included), leaving none for an answer; send a shorter conversation",
                "messages",
                code="context_length_exceeded",
            )
        image = req.image
        pixels = assistant.pixels(image) if image is not None else None
        stream = assistant.stream(ids, pixels, image.size if image is not None else None, req.gen)
        job.stream = stream
        if job.cancelled.is_set():
            stream.cancel()
        job.send("start", positions)
        for piece in stream:
            job.send("piece", piece)
        reason = stream.finish_reason
        self._count("cancelled" if reason == "cancelled" else "completed")
        job.send("done", reason, stream.new_tokens)

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.counts, name, getattr(self.counts, name) + 1)
