"""A multi-turn conversation with a loaded COMM model: history, the image, prompt building and streaming."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image

from comm_tower.data.templates import Message, get_template
from comm_tower.inference.generation import pixel_values, user_text
from comm_tower.inference.streaming import stream_generate

logger = logging.getLogger(__name__)


class ChatSession:
    """One conversation: LLaVA's rules (the image goes in front of the first user turn; one image per chat)."""

    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        image_processor: Any,
        context_len: int,
        conv_mode: str = "vicuna_v1",
        temperature: float = 0.2,
        top_p: float | None = None,
        max_new_tokens: int = 512,
    ) -> None:
        self.tokenizer, self.model, self.image_processor = tokenizer, model, image_processor
        self.context_len = context_len
        self.template = get_template(conv_mode)
        self.keep_history = self.template.name != "plain"  # 'plain' (stage 1) only captions one image
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.history: list[Message] = []
        self.pixels: torch.Tensor | None = None

    def set_image(self, image: Image.Image | None) -> None:
        """Use `image` from now on; a new image starts a new conversation."""
        self.reset()
        if image is None:
            self.pixels = None
            return
        aspect = getattr(self.model.config, "image_aspect_ratio", None) or "pad"
        self.pixels = pixel_values(image, self.image_processor, aspect)

    def reset(self) -> None:
        """Forget the turns so far (the image stays)."""
        self.history = []

    def _messages(self, text: str) -> list[Message]:
        first = not self.history or not self.keep_history
        turn = Message("user", user_text(text, with_image=self.pixels is not None and first))
        return [*self.history, turn] if self.keep_history else [turn]

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of the prompt for the next answer; old turns are dropped if it would not fit."""
        messages = self._messages(text)
        image_tokens = self.model.get_vision_tower().num_patches - 1 if self.pixels is not None else 0
        budget = self.context_len - self.max_new_tokens - image_tokens
        ids = self.template.encode_prompt(messages, self.tokenizer)
        while len(ids) > budget and len(messages) > 3:
            # keep the first exchange (it holds the image), drop the oldest after it
            messages = messages[:2] + messages[4:]
            ids = self.template.encode_prompt(messages, self.tokenizer)
            logger.warning(
                "conversation too long for %d positions: dropped the oldest turns", self.context_len
            )
        if len(ids) > budget:
            raise ValueError(
                f"the prompt takes {len(ids) + image_tokens} positions, leaving fewer than --max-new-tokens "
                f"{self.max_new_tokens} of the model's {self.context_len}; ask something shorter or lower it"
            )
        self.history = messages[:-1] if self.keep_history else []
        return ids

    def generate_kwargs(self, ids: list[int]) -> dict[str, Any]:
        """`model.generate` arguments for one answer (greedy at temperature 0)."""
        device = self.model.get_input_embeddings().weight.device
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        kwargs: dict[str, Any] = {
            "inputs": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.temperature > 0,
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": pad,
            "use_cache": True,
        }
        if self.temperature > 0:
            kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        if self.pixels is not None:
            kwargs["images"] = self.pixels.unsqueeze(0)  # the model moves it to the tower's device and dtype
        return kwargs

    def ask(self, text: str) -> Iterator[str]:
        """Stream the answer to `text`; the exchange joins the history once the answer is complete."""
        turn = self._messages(text)[-1]
        ids = self.prompt_ids(text)
        pieces = []
        for piece in stream_generate(self.model, self.tokenizer, **self.generate_kwargs(ids)):
            if not pieces:
                piece = piece.lstrip()  # templates put a space after "ASSISTANT:"; do not print it
                if not piece:
                    continue
            pieces.append(piece)
            yield piece
        if self.keep_history:
            self.history += [turn, Message("assistant", "".join(pieces).strip())]
