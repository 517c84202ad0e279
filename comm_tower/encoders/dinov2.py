"""DINOv2 encoders (`Dinov2Model`, and `Dinov2WithRegistersModel` where transformers has it)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import Dinov2Config, Dinov2Model, PretrainedConfig

from comm_tower.encoders.base import ENCODERS, VisionEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@ENCODERS.register("dinov2")
class Dinov2Encoder(VisionEncoder):
    """DINOv2 ViT; position embeddings are interpolated to the input size, so it runs at CLIP's crop."""

    family = "dinov2"
    model_types = ("dinov2",)
    config_class = Dinov2Config
    model_class = Dinov2Model
    default_mean = IMAGENET_MEAN
    default_std = IMAGENET_STD

    @classmethod
    def num_prefix_tokens(cls, config: PretrainedConfig) -> int:
        """CLS plus register tokens, if any."""
        return 1 + int(getattr(config, "num_register_tokens", 0) or 0)

    def blocks(self) -> nn.ModuleList:
        """DINOv2 layers."""
        return self.model.encoder.layer

    def stem(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch embeddings with CLS (and registers) and interpolated position embeddings."""
        return self.model.embeddings(pixel_values)


try:  # transformers >= 4.48 only; older releases simply lack this family
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
except ImportError:  # pragma: no cover - depends on the installed transformers
    Dinov2WithRegistersModel = None

if Dinov2WithRegistersModel is not None:

    @ENCODERS.register("dinov2_registers")
    class Dinov2RegistersEncoder(Dinov2Encoder):
        """DINOv2 with register tokens ("Vision Transformers Need Registers")."""

        family = "dinov2_registers"
        model_types = ("dinov2_with_registers",)
        config_class = Dinov2WithRegistersConfig
        model_class = Dinov2WithRegistersModel
