"""Encoder families, registered by name: `clip`, `dinov2`, `dinov2_registers` (newer transformers), `siglip`."""

# the family classes register themselves by name when their module is imported
from comm_tower.encoders.base import ATTN_IMPLEMENTATIONS, ENCODERS, VisionEncoder, resolve_layer_indices
from comm_tower.encoders.clip import ClipEncoder  # noqa: F401
from comm_tower.encoders.dinov2 import Dinov2Encoder  # noqa: F401
from comm_tower.encoders.siglip import SiglipEncoder  # noqa: F401

__all__ = ["ATTN_IMPLEMENTATIONS", "ENCODERS", "VisionEncoder", "resolve_layer_indices"]
