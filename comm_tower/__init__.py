"""comm-tower: COMM vision towers (multi-level CLIP + DINOv2, MFM fusion) for LLaVA-style MLLMs.

Names are imported on first use, so `comm-chat --help` or a metric import does not pay for torch and
transformers until something needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_vision_tower": "comm_tower.builders",
    "build_vision_projector": "comm_tower.builders",
    "AlignSpec": "comm_tower.spec",
    "CommSpec": "comm_tower.spec",
    "EncoderSpec": "comm_tower.spec",
    "SpecError": "comm_tower.spec",
    "CommImageProcessor": "comm_tower.processor",
    "expand_to_square": "comm_tower.processor",
    "CommVisionTower": "comm_tower.tower",
    "load_pretrained_model": "comm_tower.inference.loading",
    "is_comm_tower_name": "comm_tower.zoo",
    "list_presets": "comm_tower.zoo",
    "load_preset": "comm_tower.zoo",
    "resolve_spec": "comm_tower.zoo",
    "spec_for_name": "comm_tower.zoo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'comm_tower' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
