"""`Assistant`: a loaded model with the chat format it was trained in; the one way to ask it something.

comm-chat, comm-web, comm-eval, the lmms-eval plugin, the demo and the benchmarks all go through it, so a
prompt, the pixels and the `generate` arguments are built the same way everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from comm_tower.data.templates import Message
from comm_tower.inference.generation import (
    GenerationConfig,
    TokenBudget,
    continuation_logprob,
    generate_batch,
    generate_kwargs,
    image_tokens,
    pixel_values,
    prompt_positions,
)
from comm_tower.inference.loading import context_length, load_pretrained_model
from comm_tower.inference.prompts import ChatFormat
from comm_tower.inference.streaming import GenerationStream, stream_generate

logger = logging.getLogger(__name__)


class Assistant:
    """Tokenizer, model and image processor, with the recorded chat format, aspect ratio and context length.

    `conv_mode`, `system_prompt` and `image_aspect_ratio` override what the checkpoint records; answers are
    as long as asked (`GenerationConfig.max_new_tokens`) or as fits the context, capped with one notice.
    """

    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        image_processor: Any,
        context_len: int | None = None,
        conv_mode: str | None = None,
        system_prompt: str | None = None,
        image_aspect_ratio: str | None = None,
    ) -> None:
        self.tokenizer, self.model, self.image_processor = tokenizer, model, image_processor
        config = model.config
        self.chat = ChatFormat.of(config, conv_mode, system_prompt)
        self.image_aspect_ratio = image_aspect_ratio or getattr(config, "image_aspect_ratio", None) or "pad"
        self.context_len = int(context_len or context_length(model))
        self.budget = TokenBudget(self.context_len)
        logger.info("chat format: %s; images: %s", self.chat.describe(), self.image_aspect_ratio)

    @classmethod
    def load(
        cls,
        model_path: str,
        model_base: str | None = None,
        conv_mode: str | None = None,
        system_prompt: str | None = None,
        **load_kwargs: Any,
    ) -> Assistant:
        """Load a checkpoint (`load_pretrained_model`'s arguments) and answer in its recorded chat format."""
        bundle = load_pretrained_model(str(model_path), model_base, **load_kwargs)
        return cls(*bundle, conv_mode=conv_mode, system_prompt=system_prompt)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """`[3, H, W]` pixels of `image`, as the model was trained to see them."""
        return pixel_values(image, self.image_processor, self.image_aspect_ratio)

    def prompt_ids(self, turns: Sequence[Message]) -> list[int]:
        """Token ids of the generation prompt for `turns`, opened by the system prompt."""
        return self.chat.prompt_ids(turns, self.tokenizer)

    def question_ids(self, question: str, with_image: bool) -> list[int]:
        """Token ids of a one-question prompt (the image, if any, in front of the question)."""
        return self.chat.question_ids(question, self.tokenizer, with_image)

    def positions(self, ids: Sequence[int]) -> int:
        """Positions the prompt `ids` takes in the LLM, images expanded."""
        return prompt_positions(ids, image_tokens(self.model))

    def generate_kwargs(
        self,
        batch_ids: Sequence[Sequence[int]],
        images: Sequence[torch.Tensor] | None,
        image_sizes: Sequence[tuple[int, int]] | None,
        gen: GenerationConfig,
    ) -> dict[str, Any]:
        """`model.generate` arguments for a batch of prompts (images: one per prompt, or None)."""
        return generate_kwargs(self.model, self.tokenizer, batch_ids, images, image_sizes, gen, self.budget)

    def answer(
        self,
        batch_ids: Sequence[Sequence[int]],
        images: Sequence[torch.Tensor] | None,
        image_sizes: Sequence[tuple[int, int]] | None,
        gen: GenerationConfig,
    ) -> list[str]:
        """One answer per prompt, generated as one left-padded batch."""
        return generate_batch(self.model, self.tokenizer, batch_ids, images, image_sizes, gen, self.budget)

    def ask(self, image: Image.Image | None, question: str, gen: GenerationConfig | None = None) -> str:
        """The answer to one question about `image` (or about nothing)."""
        gen = gen or GenerationConfig()
        ids = self.question_ids(question, image is not None)
        if image is None:
            return self.answer([ids], None, None, gen)[0]
        return self.answer([ids], [self.pixels(image)], [image.size], gen)[0]

    def stream(
        self,
        ids: Sequence[int],
        pixels: torch.Tensor | None,
        image_size: tuple[int, int] | None,
        gen: GenerationConfig,
    ) -> GenerationStream:
        """The answer to the prompt `ids`, as text pieces while it is generated (they join to `ask`'s answer)."""
        images = [pixels] if pixels is not None else None
        sizes = [image_size] if image_size is not None and pixels is not None else None
        kwargs = self.generate_kwargs([ids], images, sizes, gen)
        return stream_generate(self.model, self.tokenizer, stop=gen.stop, seed=gen.seed, **kwargs)

    def logprob(
        self, context: str, continuation: str, pixels: torch.Tensor | None, image_size: tuple[int, int] | None
    ) -> tuple[float, bool]:
        """log p(continuation | question `context`, image) and whether greedy decoding would produce it."""
        ctx = self.question_ids(context, pixels is not None)
        cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return continuation_logprob(self.model, ctx, cont, pixels, image_size)
