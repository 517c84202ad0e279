"""Stream an answer as it is generated: `generate` runs in a thread, decoded text pieces come out of a queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

_DONE = object()


class TextChunkStreamer(BaseStreamer):
    """Receives token ids from `generate` and hands out the newly decoded text, one piece per token.

    The first `put` is the prompt (or nothing, when generating from embeddings) and is skipped. Text is
    decoded from all new tokens so far and only the new suffix is emitted, so multi-byte characters split
    across tokens come out whole (a piece is held back while it ends in an incomplete character).
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.sent = 0
        self.prompt_seen = False
        self.pieces: queue.Queue = queue.Queue()

    def put(self, value: torch.Tensor) -> None:
        """Called by `generate` with the prompt first, then each new token (batch size 1)."""
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if value.dim() > 1:
            if value.shape[0] != 1:
                raise ValueError("TextChunkStreamer streams one sequence; batch size must be 1")
            value = value[0]
        self.ids.extend(int(t) for t in value.tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd"):
            return  # an incomplete UTF-8 character: wait for the next token
        self._emit(text)

    def end(self) -> None:
        """Called by `generate` when it stops: flush what is left and close the stream."""
        self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens))
        self.pieces.put(_DONE)

    def fail(self, err: BaseException) -> None:
        """Close the stream with an error that the reading side re-raises."""
        self.pieces.put(err)

    def _emit(self, text: str) -> None:
        if len(text) > self.sent:
            self.pieces.put(text[self.sent :])
            self.sent = len(text)

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self.pieces.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def stream_generate(model: Any, tokenizer: Any, **generate_kwargs: Any) -> Iterator[str]:
    """Run `model.generate(**generate_kwargs)` in a thread and yield the answer's text as it grows."""
    streamer = TextChunkStreamer(tokenizer)

    def work() -> None:
        try:
            model.generate(streamer=streamer, **generate_kwargs)
        except BaseException as err:  # handed to the reader, which re-raises it in the main thread
            streamer.fail(err)

    thread = threading.Thread(target=work, name="comm-generate", daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        thread.join()
