"""Build the tower and projector for a model: from encoder folders (training) or from a saved config (reload).

Decision: checkpoints hold the tower's encoder weights, and the config holds each encoder's HF config
(`mm_encoder_configs`), so a reload rebuilds the encoders' structure without their folders and fills it from
the checkpoint. A reload therefore never depends on the original encoder paths, and fine-tuned or swapped
encoder weights are never silently replaced by the folder's (LLaVA #902).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from comm_tower.builders import build_vision_projector, build_vision_tower

logger = logging.getLogger(__name__)


def build_tower_for_training(config: Any) -> nn.Module:
    """Build the tower from its encoder folders (weights loaded whole, frozen) and record what a reload needs."""
    tower = build_vision_tower(config, delay_load=False)
    config.mm_hidden_size = tower.hidden_size
    config.mm_encoder_configs = tower.encoder_configs()
    return tower


def build_tower_for_reload(config: Any) -> nn.Module:
    """Rebuild the tower's structure from `mm_comm` + `mm_encoder_configs`; the checkpoint fills the weights."""
    tower = build_vision_tower(config, delay_load=True)
    saved = getattr(config, "mm_encoder_configs", None)
    if not saved:
        # The structure only: transformers builds this model on the meta device and the checkpoint, which
        # holds the tower whole, fills every weight (the folders' weights would be replaced anyway).
        logger.warning(
            "config has no mm_encoder_configs; the tower's encoder structure comes from their folders (%s)",
            ", ".join(f"{e.name}: {e.path}" for e in tower.spec.encoders),
        )
        try:
            structure = tower.folder_encoder_configs()
        except OSError as err:
            raise ValueError(
                "config.json records no mm_encoder_configs, so the tower's encoder structure is read from the "
                f"encoder folders, and one cannot be read ({err}). Fix: set COMM_ENCODER_PATHS='NAME=/folder,...' "
                "to where the encoders are now"
            ) from err
        tower.load_structure(structure)
        # recorded as read, as training records it: a re-save no longer needs the folders
        config.mm_encoder_configs = structure
        return tower
    tower.load_structure(saved)
    return tower


def build_projector(config: Any, vision_tower: nn.Module) -> nn.Module:
    """The projector for `config` and `vision_tower` (LLaVA's `mm_projector`)."""
    return build_vision_projector(config, vision_cfg=vision_tower.config)
