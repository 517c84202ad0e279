"""Build a `CommLlavaForCausalLM` for training (LLM + tower + projector) and load saved ones for inference."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from comm_tower.model.configuration import MODEL_TYPE, CommLlavaConfig
from comm_tower.model.modeling import CommLlavaForCausalLM
from comm_tower.model.tower_io import build_projector, build_tower_for_training
from comm_tower.model.zero import load_state_dict_gathered

logger = logging.getLogger(__name__)


def from_language_model(
    language_model: PreTrainedModel,
    vision_tower: str,
    mm_projector_type: str = "linear",
    **mm_fields: Any,
) -> CommLlavaForCausalLM:
    """Wrap a loaded causal LM: build the tower from its encoder folders and a fresh projector."""
    attn = language_model.config._attn_implementation
    config = CommLlavaConfig(
        text_config=language_model.config,
        mm_vision_tower=vision_tower,
        mm_projector_type=mm_projector_type,
        **mm_fields,
    )
    config._attn_implementation = attn  # building the config reset the (shared) LLM config's kernel
    tower = build_tower_for_training(config)
    projector = build_projector(config, tower)
    param = next(language_model.parameters())
    compute = param.dtype if param.dtype.is_floating_point else torch.float32
    tower.to(device=param.device, dtype=compute)
    projector.to(device=param.device, dtype=compute)
    return CommLlavaForCausalLM(
        config, language_model=language_model, vision_tower=tower, mm_projector=projector
    )


def read_projector_file(path: str) -> dict[str, torch.Tensor]:
    """A stage-1 `mm_projector.bin` -> projector-local keys (`model.mm_projector.0.weight` -> `0.weight`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--pretrain_mm_mlp_adapter '{path}' does not exist; point it at stage 1's output"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    marker = "mm_projector."
    out = {k.split(marker, 1)[1]: v for k, v in state.items() if marker in k}
    if not out:
        raise ValueError(f"{path}: no key contains 'mm_projector.'; keys start with {sorted(state)[:3]}")
    return out


def load_pretrained_projector(model: CommLlavaForCausalLM, path: str) -> None:
    """Load stage 1's projector into `model` (ZeRO-3 shards gathered so nothing loads empty)."""
    load_state_dict_gathered(model.model.mm_projector, read_projector_file(path), where=path)
    logger.info("projector loaded from %s", path)


def is_comm_llava_checkpoint(path: str) -> bool:
    """Whether `path` holds a saved comm_llava model (rather than a plain causal LM)."""
    try:
        return AutoConfig.from_pretrained(path).model_type == MODEL_TYPE
    except (OSError, ValueError):
        return False


def load_lora_model(lora_dir: str, model_base: str, merge: bool = True) -> CommLlavaForCausalLM:
    """A `finetune_lora.sh` output on its base LLM: tower from its encoder folders, projector from
    `non_lora_trainables.bin`, LoRA adapters merged into the LLM (or kept, `merge=False`)."""
    from peft import PeftModel

    config = AutoConfig.from_pretrained(lora_dir)
    llm = AutoModelForCausalLM.from_pretrained(model_base)
    tower = build_tower_for_training(config)
    model = CommLlavaForCausalLM(config, language_model=llm, vision_tower=tower)
    load_state_dict_gathered(
        model.model.mm_projector,
        read_projector_file(os.path.join(lora_dir, "non_lora_trainables.bin")),
        where=f"{lora_dir}/non_lora_trainables.bin",
    )
    peft_model = PeftModel.from_pretrained(model, lora_dir)
    return peft_model.merge_and_unload() if merge else peft_model
