"""The one place that talks to the model: prompts -> token ids, images -> pixels, and the generate call.

Contract (LLaVA's): the model is a Hugging Face causal LM whose `generate(input_ids, images=...,
image_sizes=..., attention_mask=...)` and `forward(input_ids, images=...)` accept input_ids holding
IMAGE_TOKEN_INDEX (-200) where the image goes. Batches are left-padded with an attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from comm_tower.constants import DEFAULT_IMAGE_TOKEN
from comm_tower.data.templates import Message, get_template


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings (greedy by default, as in LLaVA's evaluation scripts)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1


def user_text(question: str, with_image: bool) -> str:
    """LLaVA's placement: the image tag, a newline, then the question."""
    if not with_image or DEFAULT_IMAGE_TOKEN in question:
        return question
    return f"{DEFAULT_IMAGE_TOKEN}\n{question}"


def prompt_ids(
    turns: Sequence[tuple[str, str]], tokenizer: Any, template: str, system: str | None = None
) -> list[int]:
    """Token ids of a generation prompt from (role, text) turns ending with the user's.

    `system`, if given, replaces the template's system prompt (a leading "system" turn).
    """
    head = [Message("system", system)] if system is not None else []
    return get_template(template).encode_prompt([*head, *(Message(r, t) for r, t in turns)], tokenizer)


def pixel_values(image: Image.Image, image_processor: Any, image_aspect_ratio: str = "pad") -> torch.Tensor:
    """`[3, H, W]` pixels as the model was trained to see them: 'pad' to square, 'resize' (stretch) or 'square'."""
    if image_aspect_ratio == "resize":
        crop = image_processor.crop_size
        image = image.resize((crop["width"], crop["height"]), Image.BICUBIC)
    elif image_aspect_ratio == "pad":
        from comm_tower.processor import expand_to_square

        mean = getattr(image_processor, "image_mean", (0.5, 0.5, 0.5))
        image = expand_to_square(image, tuple(int(255 * m) for m in mean))
    return image_processor.preprocess(image, return_tensors="pt")["pixel_values"][0]


def _model_device_dtype(model: Any) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input_ids and attention mask for a batch of id lists."""
    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


@torch.inference_mode()
def generate_batch(
    model: Any,
    tokenizer: Any,
    batch_ids: Sequence[Sequence[int]],
    images: Sequence[torch.Tensor] | None,
    image_sizes: Sequence[tuple[int, int]] | None,
    gen: GenerationConfig,
) -> list[str]:
    """Generate one answer per prompt; returns the decoded new text, stripped."""
    device, dtype = _model_device_dtype(model)
    input_ids, attention_mask = left_pad(batch_ids, _pad_id(tokenizer))
    kwargs: dict[str, Any] = {
        "max_new_tokens": gen.max_new_tokens,
        "num_beams": gen.num_beams,
        "do_sample": gen.temperature > 0,
        "pad_token_id": _pad_id(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
    }
    if gen.temperature > 0:
        kwargs["temperature"] = gen.temperature
        if gen.top_p is not None:
            kwargs["top_p"] = gen.top_p
    if images is not None:
        kwargs["images"] = torch.stack(list(images)).to(device=device, dtype=dtype)
        kwargs["image_sizes"] = list(image_sizes) if image_sizes is not None else None
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=True, **kwargs
    )
    width = input_ids.shape[1]
    # HF returns prompt + new tokens when it embedded input_ids itself; LLaVA-style models that generate
    # from inputs_embeds return only the new tokens. The prompt holds -200, which never appears in outputs.
    if out.shape[1] > width and torch.equal(out[:, :width].cpu(), input_ids):
        out = out[:, width:]
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


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
    device, dtype = _model_device_dtype(model)
    ids = torch.tensor([list(context_ids) + list(continuation_ids)], dtype=torch.long, device=device)
    kwargs: dict[str, Any] = {}
    if image is not None:
        kwargs["images"] = image.unsqueeze(0).to(device=device, dtype=dtype)
        kwargs["image_sizes"] = [image_size] if image_size is not None else None
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).logits
    n = len(continuation_ids)
    # the image expands inside the context, so the continuation is always the last n positions
    logprobs = torch.log_softmax(logits[0, -n - 1 : -1].float(), dim=-1)
    target = torch.tensor(list(continuation_ids), device=logprobs.device)
    total = logprobs.gather(1, target[:, None]).sum().item()
    greedy = bool((logprobs.argmax(dim=-1) == target).all().item())
    return float(total), greedy
