"""Tiny random CLIP / DINOv2 / SigLIP encoders saved locally, for tests and the demo (no hub access)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

logger = logging.getLogger(__name__)

TINY_VERSION = 1
WIDTH, LAYERS, HEADS, IMAGE, PATCH = 64, 4, 4, 64, 8


def default_tiny_dir() -> Path:
    """`$COMM_TINY_DIR`, else `~/.cache/comm_tower/tiny` (the tiny presets read the same variable)."""
    return Path(os.environ.get("COMM_TINY_DIR") or Path.home() / ".cache" / "comm_tower" / "tiny")


def tiny_configs() -> dict[str, tuple[type[PreTrainedModel], PretrainedConfig]]:
    """The tiny encoders' configs: 4 blocks of width 64, 64 px images, 8 px patches (8x8 tokens)."""
    common = {
        "hidden_size": WIDTH,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": 2 * WIDTH,
        "patch_size": PATCH,
    }
    return {
        "clip": (CLIPVisionModel, CLIPVisionConfig(image_size=IMAGE, projection_dim=WIDTH, **common)),
        # trained at a larger size, like DINOv2's 518 px: position embeddings get interpolated to 8x8
        "dinov2": (Dinov2Model, Dinov2Config(image_size=IMAGE + PATCH, **common)),
        "siglip": (SiglipVisionModel, SiglipVisionConfig(image_size=IMAGE, **common)),
    }


def ensure_tiny_encoders(root: Path | None = None, seed: int = 0) -> dict[str, Path]:
    """Build (once, deterministically) and return the tiny encoders' folders under `root`."""
    root = Path(root) if root is not None else default_tiny_dir()
    stamp = {"version": TINY_VERSION, "seed": seed}
    out = {}
    for i, (name, (model_cls, config)) in enumerate(tiny_configs().items()):
        folder = root / name
        out[name] = folder
        marker = folder / "comm_tiny.json"
        if marker.is_file() and json.loads(marker.read_text()) == stamp:
            continue
        torch.manual_seed(seed + i)
        tmp = root / f".{name}.tmp-{os.getpid()}"
        model_cls(config).save_pretrained(tmp)
        (tmp / "comm_tiny.json").write_text(json.dumps(stamp))
        shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)  # atomic: concurrent ranks never see a half-written folder
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
        logger.info("built tiny %s encoder in %s", name, folder)
    return out
