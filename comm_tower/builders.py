"""LLaVA-signature entry points: `build_vision_tower(cfg, **kwargs)`, `build_vision_projector(cfg, **kwargs)`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from comm_tower.fusion.heads import build_head
from comm_tower.fusion.projector import CommProjector
from comm_tower.spec import CommSpec, SpecError
from comm_tower.tower import CommVisionTower
from comm_tower.zoo import expand_path, is_comm_tower_name, list_presets, spec_for_name, split_tower_name

logger = logging.getLogger(__name__)


def tower_name_of(cfg: Any) -> str | None:
    """The tower name in a saved config (`mm_vision_tower`), else in training args (`vision_tower`).

    An unset or empty `mm_vision_tower` falls through to `vision_tower`.
    """
    return getattr(cfg, "mm_vision_tower", None) or getattr(cfg, "vision_tower", None)


def _saved_spec(cfg: Any, vision_cfg: Any) -> tuple[Any, str] | None:
    """The spec dict carried by a tower config (`comm_spec`) or a saved model config (`mm_comm`), and its source."""
    for holder, key, source in (
        (vision_cfg, "comm_spec", "tower config field 'comm_spec'"),
        (cfg, "mm_comm", "saved config field 'mm_comm'"),
    ):
        data = getattr(holder, key, None)
        if data:
            return (dict(data) if isinstance(data, Mapping) else data), source
    return None


def is_comm_config(cfg: Any, vision_cfg: Any = None) -> bool:
    """True when `cfg` (or a tower config `vision_cfg`, as LLaVA-NeXT passes) describes a COMM tower.

    The one test of "is this ours": a saved spec, or a tower name the zoo resolves; no config is read.
    """
    return _saved_spec(cfg, vision_cfg) is not None or is_comm_tower_name(tower_name_of(cfg))


def spec_of(cfg: Any, vision_cfg: Any = None) -> CommSpec | None:
    """The resolved COMM spec a config describes, or None for a non-COMM config.

    Order: a tower config passed by the caller (LLaVA-NeXT's `vision_cfg`), the spec saved in the
    config (`mm_comm`), then the tower name resolved through the zoo.
    """
    saved = _saved_spec(cfg, vision_cfg)
    if saved is not None:
        data, source = saved
        spec = CommSpec.from_dict(data, source=source)
        return _moved(spec, os.environ.get("COMM_ENCODER_PATHS", ""))
    name = tower_name_of(cfg)
    if is_comm_tower_name(name):
        return spec_for_name(name)
    return None


def _moved(spec: CommSpec, overrides: str) -> CommSpec:
    """Apply `COMM_ENCODER_PATHS="clip=/new/clip,dinov2=/new/dino"` to a saved spec (checkpoints moved machines)."""
    if not overrides:
        return spec
    _, paths = split_tower_name(f"{spec.name}:{overrides}")
    known = {e.name for e in spec.encoders}
    if set(paths) - known:
        raise SpecError(
            f"COMM_ENCODER_PATHS names {sorted(set(paths) - known)}; tower '{spec.name}' has {sorted(known)}"
        )
    for enc in spec.encoders:
        enc.path = expand_path(paths.get(enc.name, enc.path))
    return spec


def build_vision_tower(vision_tower_cfg: Any, **kwargs: Any) -> CommVisionTower:
    """Build a COMM tower from LLaVA training args or a saved config; `delay_load=True` reads configs only."""
    name = tower_name_of(vision_tower_cfg)
    spec = spec_of(vision_tower_cfg)
    if spec is None:
        raise ValueError(
            f"Unknown vision tower '{name}': comm_tower builds {list_presets()}, a preset .json file, or "
            "'PRESET:ENCODER=/local/folder,...'"
        )
    feature = getattr(vision_tower_cfg, "mm_vision_select_feature", "patch")
    if feature != "patch":
        raise ValueError(
            f"mm_vision_select_feature='{feature}': COMM towers emit patch tokens only; use 'patch'"
        )
    return CommVisionTower(name or spec.name, spec, delay_load=kwargs.get("delay_load", False))


def build_vision_projector(config: Any, delay_load: bool = False, **kwargs: Any) -> nn.Module:
    """Build the projector LLaVA stores as `mm_projector`; for COMM towers it holds MFM, alignment and fusion.

    Writes `config.mm_comm` so that the saved config alone rebuilds tower and projector.
    """
    projector_type = getattr(config, "mm_projector_type", "linear")
    spec = spec_of(config, kwargs.get("vision_cfg"))
    if spec is None:
        return build_head(projector_type, config.mm_hidden_size, config.hidden_size)
    mm_hidden = getattr(config, "mm_hidden_size", None)
    if mm_hidden not in (None, spec.stacked_width):
        raise ValueError(
            f"config.mm_hidden_size={mm_hidden} but tower '{spec.name}' emits {spec.stacked_width} channels; "
            "set mm_hidden_size from the tower's hidden_size"
        )
    config.mm_comm = spec.to_dict()
    projector = CommProjector(spec, projector_type, config.hidden_size)
    logger.info(
        "COMM projector '%s': %s, %d -> %d -> %d (%s)",
        spec.name,
        ", ".join(f"{e.name}: {e.fusion} x{len(e.layers)}" for e in spec.encoders),
        spec.stacked_width,
        projector.fused_width,
        config.hidden_size,
        projector_type,
    )
    return projector
