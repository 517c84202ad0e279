"""Encoder families, registered by name: `clip`, `dinov2`, `dinov2_registers` (newer transformers), `siglip`."""

from comm_tower.encoders import clip, dinov2, siglip  # noqa: F401  (fill the registry)
from comm_tower.encoders.base import ATTN_IMPLEMENTATIONS, ENCODERS, VisionEncoder, resolve_layer_indices

__all__ = ["ATTN_IMPLEMENTATIONS", "ENCODERS", "VisionEncoder", "resolve_layer_indices"]
