"""Benchmark sizes: the zoo's `comm` preset at three scales (tiny, ViT-B, ViT-L/336), on random weights.

Every size runs the `comm` preset as `comm_tower.zoo` reads it: its encoders, families, fusion, alignment
and layers. The preset names its checkpoints by hub id only, so their config facts (width, depth, heads,
image and patch size) come from `ENCODER_SHAPES`, keyed by family and size; `large` holds the preset's own
checkpoints, and smaller sizes take each preset layer at the same relative depth of their shallower encoders.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig

from comm_tower.encoders import ENCODERS, resolve_layer_indices
from comm_tower.registry import Registry
from comm_tower.spec import CommSpec, SpecError
from comm_tower.zoo import load_preset, resolve_spec
from comm_tower.zoo.tiny import HEADS, IMAGE, LAYERS, PATCH, WIDTH

logger = logging.getLogger(__name__)

PRESET = "comm"
PRESET_SIZE = "large"  # the size whose encoders are the checkpoints the preset names (its layers index them)


@dataclass(frozen=True)
class EncoderShape:
    """An encoder's config facts: width, blocks, heads, its own input size (position grid) and patch."""

    width: int
    depth: int
    heads: int
    image: int
    patch: int


ENCODER_SHAPES: dict[tuple[str, str], EncoderShape] = {
    ("clip", "tiny"): EncoderShape(WIDTH, LAYERS, HEADS, IMAGE, PATCH),
    ("dinov2", "tiny"): EncoderShape(WIDTH, LAYERS, HEADS, IMAGE + PATCH, PATCH),
    ("clip", "base"): EncoderShape(768, 12, 12, 224, 16),
    ("dinov2", "base"): EncoderShape(768, 12, 12, 224, 16),
    ("clip", "large"): EncoderShape(1024, 24, 16, 336, 14),  # openai/clip-vit-large-patch14-336
    # facebook/dinov2-large: trained at 518 px, its position grid is interpolated to CLIP's 336 px crop
    ("dinov2", "large"): EncoderShape(1024, 24, 16, 518, 14),
}


@dataclass(frozen=True)
class BenchSize:
    """A benchmark scale: its name (the encoders' shapes in `ENCODER_SHAPES`) and the LLM's width and depth."""

    name: str
    llm_width: int
    llm_layers: int


SIZES: Registry[BenchSize] = Registry("benchmark size")
SIZES.register("tiny")(BenchSize("tiny", llm_width=64, llm_layers=2))
SIZES.register("base")(BenchSize("base", llm_width=2048, llm_layers=2))
SIZES.register("large")(BenchSize("large", llm_width=4096, llm_layers=2))


def shape_of(family: str, size: str) -> EncoderShape:
    """The config facts of a `family` encoder at benchmark size `size`."""
    shape = ENCODER_SHAPES.get((family, size))
    if shape is None:
        known = sorted({f for f, _ in ENCODER_SHAPES})
        raise SpecError(
            f"preset '{PRESET}': no benchmark shape for encoder family '{family}' (sizes are known for "
            f"{known}); add ('{family}', '{size}') to ENCODER_SHAPES in comm_tower/bench/sizes.py"
        )
    return shape


def scale_layers(layers: list[int], from_depth: int, to_depth: int) -> list[int]:
    """Each layer of a `from_depth`-block encoder mapped to the block at the nearest relative depth."""
    out = set()
    for k in resolve_layer_indices(layers, from_depth):
        out.add(0 if k == 0 else max(1, int(k * to_depth / from_depth + 0.5)))
    return sorted(out)


def encoder_config(family: str, shape: EncoderShape) -> PretrainedConfig:
    """A `family` config of `shape`, MLP ratio 4 like the real models (CLIP's quick-GELU is its default)."""
    config = ENCODERS.get(family).config_class(
        hidden_size=shape.width,
        num_hidden_layers=shape.depth,
        num_attention_heads=shape.heads,
        image_size=shape.image,
        patch_size=shape.patch,
    )
    if hasattr(config, "intermediate_size"):  # CLIP; DINOv2 keeps its default mlp_ratio of 4
        config.intermediate_size = 4 * shape.width
    return config


def sized_spec(size: BenchSize, preset: str = PRESET) -> CommSpec:
    """A preset (`comm`, or e.g. `clip` for LLaVA-1.5's single layer) with its layers moved to `size`'s
    encoder depths (weight paths still the preset's)."""
    spec = load_preset(preset)
    for enc in spec.encoders:
        source, target = shape_of(enc.family, PRESET_SIZE), shape_of(enc.family, size.name)
        enc.layers = scale_layers(enc.layers, source.depth, target.depth)
    spec.name = f"bench-{preset}-{size.name}"
    spec.description = f"the '{preset}' preset at benchmark size {size.name} (random weights)"
    return spec


def build_encoder_folders(spec: CommSpec, size: BenchSize, root: Path, seed: int = 0) -> dict[str, Path]:
    """Random-weight encoders of `size`, saved with `save_pretrained` under `root` (reused if present)."""
    out = {}
    for i, enc in enumerate(spec.encoders):
        folder = root / size.name / enc.name
        out[enc.name] = folder
        if (folder / "config.json").is_file():
            continue
        torch.manual_seed(seed + i)
        model = ENCODERS.get(enc.family).model_class(
            encoder_config(enc.family, shape_of(enc.family, size.name))
        )
        model.save_pretrained(folder)
        del model
        logger.info("saved random %s %s to %s", size.name, enc.name, folder)
    return out


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def comm_spec(size: BenchSize, root: Path, preset: str = PRESET) -> CommSpec:
    """The resolved spec of `preset` at `size`; its preset file (random-weight folders, shared by presets that
    name the same encoder) is `root/<size>/<preset>.json`."""
    spec = sized_spec(size, preset)
    folders = build_encoder_folders(spec, size, root)
    for enc in spec.encoders:
        enc.path = str(folders[enc.name])
    path = root / size.name / f"{preset}.json"
    path.write_text(json.dumps(_without_none(spec.to_dict()), indent=1))
    return resolve_spec(load_preset(str(path)))
