"""Tower forward: the COMM tower vs its two encoders run bare, vs a plain `output_hidden_states` reference."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from comm_tower.bench.report import Row, image_row
from comm_tower.bench.timing import interleaved, peak_memory_mib
from comm_tower.encoders import ENCODERS
from comm_tower.processor import renormalise
from comm_tower.spec import CommSpec
from comm_tower.tower import CommVisionTower, encoder_norm


def encoder_flops(spec: CommSpec) -> float:
    """Multiply-adds x 2 of one image through every encoder up to its deepest used block."""
    total = 0.0
    for enc in spec.encoders:
        n = enc.grid**2 + 1
        c = enc.width
        depth = max(enc.layer_indices or [0])
        per_block = 2 * (n * 12 * c * c + 2 * n * n * c)  # qkv+out (4C^2), MLP (8C^2), QK^T and AV
        total += depth * per_block + 2 * (n - 1) * 3 * enc.patch_size**2 * c
    return total


def load_hf(
    spec: CommSpec, dtype: torch.dtype, device: torch.device, truncate: bool
) -> list[PreTrainedModel]:
    """Each encoder as its plain HF model (SDPA), optionally cut after its deepest used block."""
    models = []
    for enc in spec.encoders:
        family = ENCODERS.get(enc.family)
        model = family.model_class.from_pretrained(enc.path, attn_implementation="sdpa", dtype=dtype)
        if truncate:
            blocks = family.blocks(_Holder(model))
            del blocks[max(enc.layer_indices or [0]) :]
        models.append(model.to(device).eval().requires_grad_(False))
    return models


class _Holder:
    """Lets the families' `blocks()` hook find the blocks of a bare HF model."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.root = getattr(model, "vision_model", model)


def per_encoder_pixels(spec: CommSpec, pixels: torch.Tensor) -> list[torch.Tensor]:
    """The first encoder's pixels re-expressed in every encoder's own normalisation (done before timing)."""
    src = encoder_norm(spec.encoders[0])
    return [renormalise(pixels, *src, *encoder_norm(e)) for e in spec.encoders]


def reference_features(
    spec: CommSpec, models: list[PreTrainedModel], inputs: list[torch.Tensor]
) -> torch.Tensor:
    """The straightforward tower: `output_hidden_states=True`, pick layers, drop prefix tokens, concatenate."""
    parts = []
    for enc, model, px in zip(spec.encoders, models, inputs):
        prefix = ENCODERS.get(enc.family).num_prefix_tokens(model.config)
        hidden = model(pixel_values=px, output_hidden_states=True).hidden_states
        parts += [hidden[k][:, prefix:] for k in enc.layer_indices or []]
    return torch.cat(parts, dim=-1)


def run(
    spec: CommSpec,
    size: str,
    batch: int,
    repeats: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> list[Row]:
    """Time the three candidates interleaved; ratios are to the bare encoders."""
    device = device or torch.device("cpu")
    tower = CommVisionTower(spec.name, spec)
    tower.to(device=device, dtype=dtype)
    bare = load_hf(spec, dtype, device, truncate=True)
    full_depth = all(max(e.layer_indices or [0]) == e.num_layers for e in spec.encoders)
    full = bare if full_depth else load_hf(spec, dtype, device, truncate=False)
    torch.manual_seed(0)
    pixels = torch.randn(batch, 3, spec.image_size, spec.image_size, device=device, dtype=dtype)
    inputs = per_encoder_pixels(spec, pixels)

    def bare_fn() -> None:
        for model, px in zip(bare, inputs):
            model(pixel_values=px)

    fns: dict[str, Callable[[], object]] = {
        "comm_tower": lambda: tower(pixels),
        "bare_encoders": bare_fn,
        "hidden_states_reference": lambda: reference_features(spec, full, inputs),
    }
    with torch.inference_mode():
        times = interleaved(fns, repeats, device=device)
        peaks = {name: peak_memory_mib(fn, device) for name, fn in fns.items()}
    flops = encoder_flops(spec) * batch
    attn = sorted({str(enc.model.config._attn_implementation) for enc in tower.encoders})
    rows = []
    base = times["bare_encoders"]
    for name, t in times.items():
        extra = {
            "gflop_per_s": flops / t.median / 1e9,
            "dtype": str(dtype).removeprefix("torch."),
            "attention": attn,
        }
        rows.append(
            image_row("tower_forward", size, batch, t, peaks[name], None if t is base else base, extra)
        )
    return rows
