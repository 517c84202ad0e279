"""SigLIP vision encoders (`SiglipVisionModel`): no prefix tokens."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, SiglipVisionConfig, SiglipVisionModel

from comm_tower.encoders.base import ENCODERS, VisionEncoder


@ENCODERS.register("siglip")
class SiglipEncoder(VisionEncoder):
    """SigLIP ViT; the attention-pooling head is never run."""

    family = "siglip"
    model_types = ("siglip", "siglip_vision_model")
    config_class = SiglipVisionConfig
    model_class = SiglipVisionModel
    default_mean = (0.5, 0.5, 0.5)
    default_std = (0.5, 0.5, 0.5)

    @classmethod
    def num_prefix_tokens(cls, config: PretrainedConfig) -> int:
        """SigLIP has no CLS token."""
        return 0

    def blocks(self) -> nn.ModuleList:
        """SigLIP encoder layers."""
        return self.root.encoder.layers

    def stem(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch + position embeddings."""
        return self.root.embeddings(pixel_values)
