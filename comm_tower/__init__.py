"""comm-tower: COMM vision towers (multi-level CLIP + DINOv2, MFM fusion) for LLaVA-style MLLMs."""

from comm_tower.builders import build_vision_projector, build_vision_tower
from comm_tower.config import AlignSpec, CommSpec, EncoderSpec, SpecError
from comm_tower.processor import CommImageProcessor, expand_to_square
from comm_tower.tower import CommVisionTower
from comm_tower.zoo import is_comm_tower_name, list_presets, load_preset, resolve_spec, spec_for_name

__version__ = "0.1.0"

__all__ = [
    "AlignSpec",
    "CommImageProcessor",
    "CommSpec",
    "CommVisionTower",
    "EncoderSpec",
    "SpecError",
    "build_vision_projector",
    "build_vision_tower",
    "expand_to_square",
    "is_comm_tower_name",
    "list_presets",
    "load_preset",
    "resolve_spec",
    "spec_for_name",
]
