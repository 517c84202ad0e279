"""A multi-turn conversation with an `Assistant`: the history, the image, and which old turns still fit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image

from comm_tower.data.templates import Message
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.generation import GenerationConfig
from comm_tower.inference.prompts import user_text

logger = logging.getLogger(__name__)


class ChatSession:
    """One conversation: LLaVA's rules (the image goes in front of the first user turn; one image per chat).

    Old turns are dropped (the first exchange, which holds the image, goes last) while the prompt would leave
    fewer than `gen.max_new_tokens` positions for the answer (at most a quarter of the context); an answer
    is then as long as asked or as fits, capped with one notice.
    """

    def __init__(self, assistant: Assistant, gen: GenerationConfig | None = None) -> None:
        self.assistant = assistant
        self.gen = gen or GenerationConfig()
        self.history: list[Message] = []
        self.pixels: torch.Tensor | None = None
        self.image_size: tuple[int, int] | None = None

    @property
    def model(self) -> Any:
        """The model answering."""
        return self.assistant.model

    def set_image(self, image: Image.Image | None) -> None:
        """Use `image` from now on; a new image starts a new conversation."""
        self.reset()
        self.pixels = None if image is None else self.assistant.pixels(image)
        self.image_size = None if image is None else image.size

    def reset(self) -> None:
        """Forget the turns so far (the image stays)."""
        self.history = []

    def _messages(self, text: str) -> list[Message]:
        keep = self.assistant.chat.keeps_history
        first = not self.history or not keep
        turn = Message("user", user_text(text, with_image=self.pixels is not None and first))
        return [*self.history, turn] if keep else [turn]

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of the prompt for the next answer; old turns are dropped while too little room is left."""
        return self._prompt(text)[1]

    def _prompt(self, text: str) -> tuple[Message, list[int]]:
        """(the new user turn, prompt ids); the history keeps the turns that fit."""
        messages = self._messages(text)
        quarter = self.assistant.context_len // 4
        limit = self.assistant.context_len - min(self.gen.max_new_tokens or quarter, quarter)
        ids = self.assistant.prompt_ids(messages)
        while self.assistant.positions(ids) > limit and len(messages) > 1:
            if len(messages) > 3:  # keep the first exchange (it holds the image), drop the oldest after it
                messages = messages[:2] + messages[4:]
            else:  # only the first exchange is left: the image moves to the new question
                messages = [Message("user", user_text(text, with_image=self.pixels is not None))]
            ids = self.assistant.prompt_ids(messages)
            logger.warning(
                "conversation too long for %d positions: dropped the oldest turns", self.assistant.context_len
            )
        self.history = messages[:-1] if self.assistant.chat.keeps_history else []
        return messages[-1], ids

    def generate_kwargs(self, ids: list[int]) -> dict[str, Any]:
        """`model.generate` arguments for the answer to the prompt `ids` (with this chat's image)."""
        images = [self.pixels] if self.pixels is not None else None
        sizes = [self.image_size] if self.pixels is not None else None
        return self.assistant.generate_kwargs([ids], images, sizes, self.gen)

    def ask(self, text: str) -> Iterator[str]:
        """Stream the answer to `text`; the exchange joins the history once the answer is complete."""
        turn, ids = self._prompt(text)
        pieces = []
        for piece in self.assistant.stream(ids, self.pixels, self.image_size, self.gen):
            pieces.append(piece)
            yield piece
        if self.assistant.chat.keeps_history:
            self.history += [turn, Message("assistant", "".join(pieces).strip())]
