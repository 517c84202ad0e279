"""`load_pretrained_model`: LLaVA's loader for COMM checkpoints, without its device, dtype and 4-bit traps.

Full checkpoints load as saved (tower weights included). Projector-only (stage 1) and LoRA checkpoints are
built on `model_base`: a plain causal LM (the tower then comes from its encoder folders, frozen as in
training) or a saved comm_llava model. Under 4 or 8 bits only the LLM's linear layers are quantised; the
tower, the projector and the output head stay in `dtype`, on the same device as the LLM.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer

from comm_tower.inference.checkpoints import CheckpointKind, checkpoint_kind, has_tokenizer, model_type
from comm_tower.inference.devices import resolve_device, resolve_dtype
from comm_tower.model import CommLlavaForCausalLM
from comm_tower.model.assembly import (
    PROJECTOR_FILE,
    LoadOptions,
    assemble_model,
    load_comm_llava,
    load_lora,
    load_projector,
)
from comm_tower.model.configuration import MODEL_TYPE
from comm_tower.model.quantization import QUANTIZED_LINEAR, is_quantized_module

logger = logging.getLogger(__name__)

# Run settings a projector-only or LoRA checkpoint records, which win over those of a comm_llava base.
# what a projector-only or LoRA checkpoint sets over its base: preprocessing, lengths, the chat format trained with
RUN_FIELDS = (
    "image_aspect_ratio",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "conv_template",
    "system_prompt",
)


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    load_4bit: bool = False,
    load_8bit: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> tuple[Any, CommLlavaForCausalLM, Any, int]:
    """`(tokenizer, model, image_processor, context_len)` of a full, projector-only or LoRA checkpoint."""
    dev = resolve_device(device)
    dtype = resolve_dtype(dev, dtype)
    kind = checkpoint_kind(str(model_path))
    model_path = str(model_path)
    load = load_options(dev, dtype, load_4bit, load_8bit)
    if kind is CheckpointKind.FULL:
        if model_base:
            logger.warning("%s is a full checkpoint; ignoring --model-base %s", model_path, model_base)
        model = load_comm_llava(model_path, load)
    else:
        if not model_base:
            what = "LoRA adapters" if kind is CheckpointKind.LORA else f"only {PROJECTOR_FILE} (stage 1)"
            raise ValueError(
                f"{model_path} holds {what}; fix: pass --model-base with the LLM it was trained on"
            )
        model = _load_on_base(model_path, str(model_base), kind, load)
    tokenizer = _load_tokenizer(model_path if has_tokenizer(model_path) else str(model_base))
    finish_for_inference(model, dev, dtype)
    logger.info("loaded %s checkpoint %s: %s", kind.value, model_path, describe(model))
    return tokenizer, model, model.get_vision_tower().image_processor, context_length(model)


def load_options(device: torch.device, dtype: torch.dtype, load_4bit: bool, load_8bit: bool) -> LoadOptions:
    """Everything on `device` in `dtype`; the LLM's linear layers in NF4 (double quantisation) or int8 if asked."""
    if load_4bit and load_8bit:
        raise ValueError("--load-4bit and --load-8bit were both given; pick one")
    bits = 4 if load_4bit else 8 if load_8bit else 16
    return LoadOptions(dtype=dtype, device_map={"": str(device)}, bits=bits)


def _load_on_base(path: str, base: str, kind: CheckpointKind, load: LoadOptions) -> CommLlavaForCausalLM:
    """The model assembled on `base` (plain LLM or comm_llava) with the checkpoint's projector and LoRA merged."""
    if model_type(path) != MODEL_TYPE:
        raise ValueError(
            f"{path}/config.json is not a comm_llava config (model_type {model_type(path)!r}); "
            "fix: point --model-path at the comm-train output folder"
        )
    config = AutoConfig.from_pretrained(path)
    model = assemble_model(base, config, load=load)
    for field in RUN_FIELDS:
        setattr(model.config, field, getattr(config, field, getattr(model.config, field)))
    if kind is CheckpointKind.LORA:
        return load_lora(model, path)
    load_projector(model, os.path.join(path, PROJECTOR_FILE))
    return model


def _load_tokenizer(path: str) -> Any:
    """The checkpoint's tokenizer (fast, for the templates' offsets), with a pad token."""
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


def finish_for_inference(model: CommLlavaForCausalLM, device: torch.device, dtype: torch.dtype) -> None:
    """Eval mode, KV cache on, tower and projector in `dtype` on `device` (the LLM's); never quantised."""
    model.eval()
    model.config.use_cache = True
    model.config.text_config.use_cache = True
    model.language_model.config.use_cache = True
    mm = model.get_model()
    bad = [name for name, m in mm.named_modules() if is_quantized_module(m)]
    if bad:
        raise RuntimeError(f"tower/projector modules were quantised ({bad[:3]}); this is a loader bug")
    mm.to(device=device, dtype=dtype)


def context_length(model: CommLlavaForCausalLM) -> int:
    """The longest sequence the model was trained for (tokenizer max length, else the LLM's positions)."""
    return int(
        model.config.tokenizer_model_max_length
        or getattr(model.config.text_config, "max_position_embeddings", None)
        or 2048
    )


def describe(model: CommLlavaForCausalLM) -> str:
    """One line: where each part lives and in which dtype ('4-bit' for quantised LLM layers)."""
    return ", ".join(f"{part}: {where}" for part, where in part_dtypes(model).items())


def part_dtypes(model: CommLlavaForCausalLM) -> dict[str, str]:
    """{'llm': ..., 'tower': ..., 'projector': ...} -> 'device dtype' or 'device 4-bit'."""
    parts = {
        "llm": model.language_model,
        "tower": model.get_vision_tower(),
        "projector": model.get_model().mm_projector,
    }
    out = {}
    for name, module in parts.items():
        kinds = {_weight_kind(m) for m in module.modules() if _weight_kind(m)}
        param = next(module.parameters())
        out[name] = f"{param.device} {'+'.join(sorted(kinds))}"
    return out


def _weight_kind(module: torch.nn.Module) -> str | None:
    name = type(module).__name__
    if name in QUANTIZED_LINEAR:
        return QUANTIZED_LINEAR[name]
    weight = getattr(module, "weight", None)
    if isinstance(module, torch.nn.Linear) and weight is not None:
        return str(weight.dtype).removeprefix("torch.")
    return None
