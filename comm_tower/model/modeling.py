"""`CommLlavaForCausalLM`: any HF causal LM + a COMM vision tower + projector, spliced at `<image>` ids."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from comm_tower.model.configuration import CommLlavaConfig
from comm_tower.model.splice import SplicedBatch, splice_image_features
from comm_tower.model.tower_io import build_projector, build_tower_for_reload

logger = logging.getLogger(__name__)


class CommMultimodal(nn.Module):
    """Holds `vision_tower` and `mm_projector`, so their keys read `model.vision_tower.*` / `model.mm_projector.*`."""

    def __init__(self, vision_tower: nn.Module, mm_projector: nn.Module) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.mm_projector = mm_projector


class CommLlavaForCausalLM(PreTrainedModel):
    """A multimodal causal LM. `language_model` is any `AutoModelForCausalLM`; `model` holds tower and projector.

    Checkpoints hold every weight, the vision tower's frozen encoders included (decision: a reload never
    depends on the encoder folders still being there, and never silently keeps stale encoder weights).
    """

    config_class = CommLlavaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules: list[str] = []  # noqa: RUF012 - HF reads a class attribute

    def __init__(
        self,
        config: CommLlavaConfig,
        language_model: PreTrainedModel | None = None,
        vision_tower: nn.Module | None = None,
        mm_projector: nn.Module | None = None,
    ) -> None:
        super().__init__(config)
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.language_model = language_model
        if vision_tower is None:
            vision_tower = build_tower_for_reload(config)
        if mm_projector is None:
            mm_projector = build_projector(config, vision_tower)
        self.model = CommMultimodal(vision_tower, mm_projector)
        self.post_init()

    # HF plumbing -----------------------------------------------------------------------------
    @classmethod
    def can_generate(cls) -> bool:
        """True: `generate` (LLaVA's) splices the images and hands the rest to the LLM's own `generate`."""
        return True

    def _init_weights(self, module: nn.Module) -> None:
        """No-op: the LLM initialises itself; tower encoders and projector modules initialise at construction."""

    def get_input_embeddings(self) -> nn.Module:
        """The LLM's token embedding table."""
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the LLM's token embedding table."""
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        """The LLM's output head."""
        return self.language_model.get_output_embeddings()

    def get_vision_tower(self) -> nn.Module:
        """The COMM vision tower (LLaVA's accessor name)."""
        return self.model.vision_tower

    def get_model(self) -> CommMultimodal:
        """The module holding `vision_tower` and `mm_projector` (LLaVA's accessor name)."""
        return self.model

    def activation_checkpointing_enable(self, *args: Any, **kwargs: Any) -> None:
        """Checkpoint the LLM's layers only; the frozen tower runs without grad and keeps no activations."""
        self.language_model.activation_checkpointing_enable(*args, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        """Turn LLM activation checkpointing off."""
        self.language_model.activation_checkpointing_disable()

    # multimodal ------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Pixels `[B,3,H,W]` (or a list of `[3,H,W]` / `[1,3,H,W]`) -> projected features `[B, N, D_llm]`.

        Each part gets its input on its own device and in its own dtype: pixels in any float dtype on any
        device go to the tower's, features to the projector's, and the result to the LLM embeddings' device and
        dtype, where it is spliced (LLaVA #829: fp32 features meeting a half LLM; #1516: parts on other devices).
        """
        if isinstance(images, (list, tuple)):
            images = torch.cat([im if im.dim() == 4 else im.unsqueeze(0) for im in images])
        tower = self.model.vision_tower
        tower_param = next(tower.parameters())
        feats = tower(images.to(device=tower_param.device, dtype=tower_param.dtype))
        proj_param = next(self.model.mm_projector.parameters())
        feats = self.model.mm_projector(feats.to(device=proj_param.device, dtype=proj_param.dtype))
        embeddings = self.get_input_embeddings().weight
        return feats.to(device=embeddings.device, dtype=embeddings.dtype)

    def prepare_multimodal_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        images: torch.Tensor | list[torch.Tensor] | None,
        padding_side: str | None = None,
    ) -> SplicedBatch:
        """Embed text, encode images, splice features at -200 ids and pad (LLaVA's step before the LLM)."""
        feats = self.encode_images(images) if images is not None else None
        return splice_image_features(
            input_ids,
            attention_mask,
            labels,
            feats,
            self.get_input_embeddings(),
            max_length=self.config.tokenizer_model_max_length,
            padding_side=padding_side or self.config.tokenizer_padding_side,
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        images: torch.Tensor | list[torch.Tensor] | None = None,
        image_sizes: list | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """LLaVA's forward: with `images`, splice first; then the LLM (loss from `labels` when given).

        `pixel_values` (what `CommProcessor` and transformers' pipelines pass) is another name for `images`.
        """
        images = images if images is not None else pixel_values
        if images is not None and len(images) == 0:
            images = None  # a text-only batch: the collator stacked zero images
        if inputs_embeds is None and images is not None:
            spliced = self.prepare_multimodal_inputs(input_ids, attention_mask, labels, images)
            input_ids, inputs_embeds, labels = None, spliced.inputs_embeds, spliced.labels
            attention_mask, position_ids = spliced.attention_mask, spliced.position_ids
        elif self.training and inputs_embeds is None and torch.is_grad_enabled():
            # Text-only batch: run tower + projector on a blank image with weight 0, so every rank
            # gathers and reduces the projector's parameters in step (ZeRO-3 would hang otherwise).
            inputs_embeds = self.get_input_embeddings()(input_ids)
            size = self.model.vision_tower.image_size
            blank = torch.zeros(1, 3, size, size, device=inputs_embeds.device)
            inputs_embeds = inputs_embeds + 0.0 * self.encode_images(blank).sum()
            input_ids = None
        return self.language_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            **({"past_key_values": past_key_values} if past_key_values is not None else {}),
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        images: torch.Tensor | list[torch.Tensor] | None = None,
        image_sizes: list | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """LLaVA's `generate(inputs, images=...)`: returns only the new token ids (prompt not repeated).

        Also takes `CommProcessor`'s output as it is: `input_ids`, `attention_mask`, `pixel_values`.
        """
        if "input_ids" in kwargs:
            inputs = kwargs.pop("input_ids")
        images = images if images is not None else pixel_values
        if images is None:
            return self.language_model.generate(inputs, attention_mask=attention_mask, **kwargs)
        spliced = self.prepare_multimodal_inputs(inputs, attention_mask, None, images, padding_side="left")
        return self.language_model.generate(
            inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, **kwargs
        )
