"""Stream an answer as it is generated: `generate` runs in a thread, decoded text pieces come out of a queue.

Stop strings end an answer (the stop string itself is not part of it); a reader may cancel a generation
(a client that hung up), which ends `generate` at the next token.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from comm_tower.inference.generation import cut_at_stop, seed_sampling

_DONE = object()


def held_back(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of `text` may still turn into a stop string (so are not sent yet)."""
    longest = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


class TextChunkStreamer(BaseStreamer):
    """Receives token ids from `generate` and hands out the newly decoded text, one piece per token.

    The first `put` is the prompt (or nothing, when generating from embeddings) and is skipped. Text is
    decoded from all new tokens so far and only the new suffix is emitted, so multi-byte characters split
    across tokens come out whole (a piece is held back while it ends in an incomplete character). The pieces
    join to the stripped answer: leading white space is dropped and trailing white space waits for more text.
    Text that may be the start of a stop string waits too; once a stop string appears, `stopped` is set and
    the answer ends in front of it.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.sent = 0
        self.prompt_seen = False
        self.stopped = False
        self.pieces: queue.Queue = queue.Queue()

    def put(self, value: torch.Tensor) -> None:
        """Called by `generate` with the prompt first, then each new token (batch size 1)."""
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.stopped:
            return
        if value.dim() > 1:
            if value.shape[0] != 1:
                raise ValueError("TextChunkStreamer streams one sequence; batch size must be 1")
            value = value[0]
        self.ids.extend(int(t) for t in value.tolist())
        text = self._text()
        if text.endswith("\ufffd"):
            return  # an incomplete UTF-8 character: wait for the next token
        cut, self.stopped = cut_at_stop(text, self.stop)
        if self.stopped:
            self._emit(cut.rstrip())
            return
        safe = text[: len(text) - held_back(text, self.stop)]
        self._emit(safe.rstrip())

    def end(self) -> None:
        """Called by `generate` when it stops: flush what is left and close the stream."""
        if not self.stopped:
            self._emit(cut_at_stop(self._text(), self.stop)[0].rstrip())
        self.pieces.put(_DONE)

    def fail(self, err: BaseException) -> None:
        """Close the stream with an error that the reading side re-raises."""
        self.pieces.put(err)

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens).lstrip()

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


class _StopWhen(StoppingCriteria):
    """Ends `generate` once the streamer saw a stop string or the reader cancelled."""

    def __init__(self, streamer: TextChunkStreamer, cancelled: threading.Event) -> None:
        self.streamer, self.cancelled = streamer, cancelled

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = self.streamer.stopped or self.cancelled.is_set()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class GenerationStream:
    """The text pieces of one answer as it is generated; afterwards, how many tokens it took and why it ended.

    `finish_reason` is 'stop' (end of sequence or a stop string), 'length' (the token limit) or 'cancelled'.
    """

    def __init__(
        self, model: Any, tokenizer: Any, stop: Sequence[str] = (), seed: int | None = None, **kwargs: Any
    ) -> None:
        self.streamer = TextChunkStreamer(tokenizer, stop=stop)
        self.cancelled = threading.Event()
        eos = kwargs.get("eos_token_id", tokenizer.eos_token_id)
        self.eos = set(eos) if isinstance(eos, (list, tuple)) else {eos}
        self.max_new_tokens = kwargs.get("max_new_tokens")
        criteria = StoppingCriteriaList([_StopWhen(self.streamer, self.cancelled)])

        def work() -> None:
            try:
                seed_sampling(seed)
                model.generate(streamer=self.streamer, stopping_criteria=criteria, **kwargs)
            except BaseException as err:  # handed to the reader, which re-raises it in its own thread
                self.streamer.fail(err)

        self.thread = threading.Thread(target=work, name="comm-generate", daemon=True)
        self.thread.start()

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self.streamer
        finally:
            self.thread.join()

    def cancel(self) -> None:
        """Stop generating at the next token (the reader then sees the end of the stream)."""
        self.cancelled.set()

    @property
    def new_tokens(self) -> int:
        """Tokens generated so far (an end-of-sequence token counts)."""
        return len(self.streamer.ids)

    @property
    def finish_reason(self) -> str:
        """Why the answer ended: 'stop', 'length' or 'cancelled'."""
        if self.cancelled.is_set() and not self.streamer.stopped:
            return "cancelled"
        ids = self.streamer.ids
        if self.streamer.stopped or (ids and ids[-1] in self.eos):
            return "stop"
        if self.max_new_tokens is not None and len(ids) >= self.max_new_tokens:
            return "length"
        return "stop"


def stream_generate(
    model: Any, tokenizer: Any, stop: Sequence[str] = (), seed: int | None = None, **generate_kwargs: Any
) -> GenerationStream:
    """Run `model.generate(**generate_kwargs)` in a thread and yield the answer's text as it grows."""
    return GenerationStream(model, tokenizer, stop, seed, **generate_kwargs)
