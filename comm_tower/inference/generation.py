"""The generate call: pixels, decoding settings, answer length, pad/eos, left-padded batches, log-likelihoods.

Contract (LLaVA's): the model is a Hugging Face causal LM whose `generate(inputs, images=..., image_sizes=...,
attention_mask=...)` and `forward(input_ids, images=...)` accept input_ids holding IMAGE_TOKEN_INDEX (-200)
where the image goes; each -200 becomes the tower's `num_patches` positions. Batches are left-padded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from comm_tower.constants import IMAGE_TOKEN_INDEX
from comm_tower.inference.loading import context_length
from comm_tower.processor import pixel_values  # noqa: F401 - re-exported: the readers' name for it

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings: greedy at temperature 0 (LLaVA's evaluation), sampling above it.

    `max_new_tokens=None` lets an answer take every position the context has left after the prompt. An answer
    ends in front of the first of the `stop` strings; `seed` makes sampling repeatable.
    """

    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(
                f"max_new_tokens {self.max_new_tokens}: must be at least 1 (or unset: all that fits)"
            )
        if self.temperature < 0:
            raise ValueError(f"temperature {self.temperature}: must be >= 0 (0 = greedy)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p {self.top_p}: must be in (0, 1]")
        if self.num_beams < 1:
            raise ValueError(f"num_beams {self.num_beams}: must be at least 1")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop {self.stop!r}: must be a tuple of non-empty strings")

    @property
    def sampling(self) -> bool:
        """Whether tokens are sampled (temperature > 0) rather than picked greedily."""
        return self.temperature > 0


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first of the `stop` strings (which is dropped), and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def seed_sampling(seed: int | None) -> None:
    """Seed torch's generators (every device) so that a sampled answer can be repeated; None leaves them."""
    if seed is not None:
        torch.manual_seed(seed)


def pad_token_id(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end of sequence."""
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


def left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input_ids and attention mask for a batch of id lists."""
    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def prompt_positions(ids: Sequence[int], per_image: int) -> int:
    """Positions a prompt takes in the LLM: its tokens, each image tag counted as `per_image` positions."""
    return len(ids) + (per_image - 1) * sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)


class TokenBudget:
    """How long an answer may be: what was asked for, capped to what fits the context (noted once)."""

    def __init__(self, context_len: int) -> None:
        self.context_len = int(context_len)
        self.noted = False

    def new_tokens(self, positions: int, requested: int | None) -> int:
        """Tokens an answer to a prompt of `positions` may take; a prompt that fills the context is an error."""
        room = self.context_len - positions
        if room < 1:
            raise ValueError(
                f"the prompt takes {positions} of the model's {self.context_len} positions, leaving none for "
                "an answer; ask something shorter (or start a new conversation)"
            )
        if requested is None or requested <= room:
            return room if requested is None else requested
        if not self.noted:
            self.noted = True
            logger.warning(
                "--max-new-tokens %d does not fit: the prompt takes %d of the model's %d positions, so "
                "answers are capped at what fits (%d tokens here); this is noted once",
                requested,
                positions,
                self.context_len,
                room,
            )
        return room


def _input_device(model: Any) -> torch.device:
    return model.get_input_embeddings().weight.device


def image_tokens(model: Any) -> int:
    """Positions one image takes in the LLM (the tower's tokens per image)."""
    return int(model.get_vision_tower().num_patches)


def generate_kwargs(
    model: Any,
    tokenizer: Any,
    batch_ids: Sequence[Sequence[int]],
    images: Sequence[torch.Tensor] | None,
    image_sizes: Sequence[tuple[int, int]] | None,
    gen: GenerationConfig,
    budget: TokenBudget | None = None,
) -> dict[str, Any]:
    """`model.generate` arguments: left-padded prompts, images, answer length, greedy or sampling, pad/eos."""
    budget = budget or TokenBudget(context_length(model))
    has_images = any(IMAGE_TOKEN_INDEX in ids for ids in batch_ids)
    per_image = image_tokens(model) if has_images else 1
    positions = max(prompt_positions(ids, per_image) for ids in batch_ids)
    pad = pad_token_id(tokenizer)
    input_ids, attention_mask = left_pad(batch_ids, pad)
    device = _input_device(model)
    kwargs: dict[str, Any] = {
        "inputs": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "max_new_tokens": budget.new_tokens(positions, gen.max_new_tokens),
        "num_beams": gen.num_beams,
        "do_sample": gen.sampling,
        "pad_token_id": pad,
        "eos_token_id": tokenizer.eos_token_id,
        "use_cache": True,
    }
    if gen.sampling:
        kwargs["temperature"] = gen.temperature
        if gen.top_p is not None:
            kwargs["top_p"] = gen.top_p
    if images is not None:
        kwargs["images"] = torch.stack(list(images))  # the model moves them to the tower's device and dtype
        kwargs["image_sizes"] = list(image_sizes) if image_sizes is not None else None
    return kwargs


def decode_answers(out: torch.Tensor, input_ids: torch.Tensor, tokenizer: Any) -> list[str]:
    """The new text of each row of `generate`'s output, stripped."""
    width = input_ids.shape[1]
    # HF returns prompt + new tokens when it embedded input_ids itself; LLaVA-style models that generate
    # from inputs_embeds return only the new tokens. The prompt holds -200, which never appears in outputs.
    if out.shape[1] > width and torch.equal(out[:, :width].cpu(), input_ids.cpu()):
        out = out[:, width:]
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


@torch.inference_mode()
def generate_batch(
    model: Any,
    tokenizer: Any,
    batch_ids: Sequence[Sequence[int]],
    images: Sequence[torch.Tensor] | None,
    image_sizes: Sequence[tuple[int, int]] | None,
    gen: GenerationConfig,
    budget: TokenBudget | None = None,
) -> list[str]:
    """Generate one answer per prompt; returns the decoded new text, cut at a stop string, stripped."""
    kwargs = generate_kwargs(model, tokenizer, batch_ids, images, image_sizes, gen, budget)
    seed_sampling(gen.seed)
    answers = decode_answers(model.generate(**kwargs), kwargs["inputs"], tokenizer)
    return [cut_at_stop(a, gen.stop)[0].strip() for a in answers]


@torch.inference_mode()
def continuation_logprob(
    model: Any,
    context_ids: Sequence[int],
    continuation_ids: Sequence[int],
    image: torch.Tensor | None,
    image_size: tuple[int, int] | None,
) -> tuple[float, bool]:
    """Sum of log p(continuation | context, image) and whether greedy decoding would produce it."""
    if not continuation_ids:
        raise ValueError("the continuation is empty; loglikelihood needs at least one token")
    ids = torch.tensor(
        [list(context_ids) + list(continuation_ids)], dtype=torch.long, device=_input_device(model)
    )
    kwargs: dict[str, Any] = {}
    if image is not None:
        kwargs["images"] = image.unsqueeze(0)
        kwargs["image_sizes"] = [image_size] if image_size is not None else None
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits
    n = len(continuation_ids)
    # the image expands inside the context, so the continuation is always the last n positions
    logprobs = torch.log_softmax(logits[0, -n - 1 : -1].float(), dim=-1)
    target = torch.tensor(list(continuation_ids), device=logprobs.device)
    total = logprobs.gather(1, target[:, None]).sum().item()
    greedy = bool((logprobs.argmax(dim=-1) == target).all().item())
    return float(total), greedy
