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
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from comm_tower.inference.checkpoints import (
    NON_LORA_FILE,
    PROJECTOR_FILE,
    CheckpointKind,
    checkpoint_kind,
    has_tokenizer,
    model_type,
)
from comm_tower.inference.devices import (
    KEEP_FLOAT_IN_COMM,
    KEEP_FLOAT_IN_LLM,
    is_quantized_module,
    quantization_config,
    resolve_device,
    resolve_dtype,
)
from comm_tower.model import CommLlavaConfig, CommLlavaForCausalLM, load_pretrained_projector
from comm_tower.model.assembly import is_comm_llava_checkpoint
from comm_tower.model.configuration import MODEL_TYPE
from comm_tower.model.tower_io import build_projector, build_tower_for_training

logger = logging.getLogger(__name__)


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
    load = LoadSettings(dev, dtype, load_4bit, load_8bit)
    if kind is CheckpointKind.FULL:
        if model_base:
            logger.warning("%s is a full checkpoint; ignoring --model-base %s", model_path, model_base)
        model = _load_comm(model_path, load)
    else:
        if not model_base:
            what = "LoRA adapters" if kind is CheckpointKind.LORA else f"only {PROJECTOR_FILE} (stage 1)"
            raise ValueError(
                f"{model_path} holds {what}; fix: pass --model-base with the LLM it was trained on"
            )
        model = _load_on_base(model_path, str(model_base), kind, load)
    tokenizer = _load_tokenizer(model_path if has_tokenizer(model_path) else str(model_base))
    finish_for_inference(model, load)
    logger.info("loaded %s checkpoint %s: %s", kind.value, model_path, describe(model))
    return tokenizer, model, model.get_vision_tower().image_processor, context_length(model)


class LoadSettings:
    """Where and how to load: device, float dtype, and the quantisation of the LLM."""

    def __init__(self, device: torch.device, dtype: torch.dtype, load_4bit: bool, load_8bit: bool) -> None:
        self.device, self.dtype = device, dtype
        self.load_4bit, self.load_8bit = load_4bit, load_8bit
        quantization_config(load_4bit, load_8bit, dtype, [])  # validate the flags early

    def kwargs(self, keep_float: list[str]) -> dict[str, Any]:
        """`from_pretrained` kwargs: dtype, everything on one device, and the bitsandbytes config if any."""
        out: dict[str, Any] = {"dtype": self.dtype, "device_map": {"": str(self.device)}}
        qconfig = quantization_config(self.load_4bit, self.load_8bit, self.dtype, keep_float)
        if qconfig is not None:
            out["quantization_config"] = qconfig
        return out


def _load_comm(path: str, load: LoadSettings) -> CommLlavaForCausalLM:
    """A saved comm_llava model; under 4/8 bits the tower, projector and head are kept in floating point."""
    model = AutoModelForCausalLM.from_pretrained(path, **load.kwargs(KEEP_FLOAT_IN_COMM + KEEP_FLOAT_IN_LLM))
    if not isinstance(model, CommLlavaForCausalLM):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a comm_llava model")
    return model


def _load_on_base(path: str, base: str, kind: CheckpointKind, load: LoadSettings) -> CommLlavaForCausalLM:
    """Build the model on `base` (plain LLM or comm_llava), load the trained projector, merge LoRA."""
    if model_type(path) != MODEL_TYPE:
        raise ValueError(
            f"{path}/config.json is not a comm_llava config (model_type {model_type(path)!r}); "
            "fix: point --model-path at the comm-train output folder"
        )
    config = AutoConfig.from_pretrained(path)
    model = _load_comm(base, load) if is_comm_llava_checkpoint(base) else _assemble(config, base, load)
    projector_file = PROJECTOR_FILE if kind is CheckpointKind.PROJECTOR else NON_LORA_FILE
    projector_path = os.path.join(path, projector_file)
    if os.path.isfile(projector_path):
        load_pretrained_projector(model, projector_path)
    elif kind is CheckpointKind.LORA:
        logger.warning("%s has no %s; the projector stays as in %s", path, NON_LORA_FILE, base)
    recorded = ("image_aspect_ratio", "tokenizer_model_max_length", "tokenizer_padding_side")
    for field in (*recorded, "conv_template", "system_prompt"):  # the chat format it was trained with
        setattr(model.config, field, getattr(config, field, getattr(model.config, field)))
    if kind is CheckpointKind.LORA:
        model = _merge_lora(model, path)
    return model


def _assemble(config: CommLlavaConfig, base: str, load: LoadSettings) -> CommLlavaForCausalLM:
    """Plain LLM from `base` (quantised if asked) + tower from its encoder folders + a projector, on one device."""
    llm = AutoModelForCausalLM.from_pretrained(base, **load.kwargs(KEEP_FLOAT_IN_LLM))
    config.text_config = llm.config
    config.sync_from_text_config()
    tower = build_tower_for_training(config)  # frozen encoders from their folders, as in training
    projector = build_projector(config, tower)
    tower.to(device=load.device, dtype=load.dtype)
    projector.to(device=load.device, dtype=load.dtype)
    model = CommLlavaForCausalLM(config, language_model=llm, vision_tower=tower, mm_projector=projector)
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"):  # peft merges LoRA into bnb layers by these
        setattr(model, flag, bool(getattr(llm, flag, False)))
    return model


def _merge_lora(model: CommLlavaForCausalLM, path: str) -> CommLlavaForCausalLM:
    """Apply the LoRA adapters in `path` and merge them into the LLM's weights."""
    try:
        from peft import PeftModel
    except ImportError as err:
        raise ImportError(
            f"{path} holds LoRA adapters; loading them needs peft: pip install peft ({err})"
        ) from err
    peft_model = PeftModel.from_pretrained(model, path)
    merged = peft_model.merge_and_unload()
    logger.info("merged LoRA adapters from %s", path)
    return merged


def _load_tokenizer(path: str) -> Any:
    """The checkpoint's tokenizer (fast, for the templates' offsets), with a pad token."""
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


def finish_for_inference(model: CommLlavaForCausalLM, load: LoadSettings) -> None:
    """Eval mode, KV cache on, tower and projector in `load.dtype` on the LLM's device; never quantised."""
    model.eval()
    model.config.use_cache = True
    model.config.text_config.use_cache = True
    model.language_model.config.use_cache = True
    mm = model.get_model()
    bad = [name for name, m in mm.named_modules() if is_quantized_module(m)]
    if bad:
        raise RuntimeError(f"tower/projector modules were quantised ({bad[:3]}); this is a loader bug")
    mm.to(device=load.device, dtype=load.dtype)


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
    if name == "Linear4bit":
        return "4-bit"
    if name == "Linear8bitLt":
        return "8-bit"
    weight = getattr(module, "weight", None)
    if isinstance(module, torch.nn.Linear) and weight is not None:
        return str(weight.dtype).removeprefix("torch.")
    return None
