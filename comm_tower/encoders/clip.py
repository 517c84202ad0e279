"""OpenAI CLIP vision encoders (`CLIPVisionModel`); one CLS token is dropped."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, PretrainedConfig

from comm_tower.encoders.base import ENCODERS, VisionEncoder


@ENCODERS.register("clip")
class ClipEncoder(VisionEncoder):
    """CLIP ViT: `hidden_states[0]` is the embeddings after `pre_layrnorm`, as in Hugging Face."""

    family = "clip"
    model_types = ("clip", "clip_vision_model")
    config_class = CLIPVisionConfig
    model_class = CLIPVisionModel
    default_mean = (0.48145466, 0.4578275, 0.40821073)
    default_std = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def num_prefix_tokens(cls, config: PretrainedConfig) -> int:
        """The CLS token."""
        return 1

    def blocks(self) -> nn.ModuleList:
        """CLIP encoder layers."""
        return self.root.encoder.layers

    def stem(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch + position embeddings, then the pre-block LayerNorm."""
        vm = self.root
        return vm.pre_layrnorm(vm.embeddings(pixel_values))
