"""Model assembly: the one way LLM + COMM tower + projector become a `CommLlavaForCausalLM`, and LoRA loading.

Training, inference loading, benchmarks and tests all build models with `assemble_model` and apply a LoRA
run's output with `load_lora`. Under 4 or 8 bits only the LLM's linear layers are quantised: the tower, the
projector and the output head stay in floating point, on the LLM's device.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedModel

from comm_tower.model.configuration import MODEL_TYPE, CommLlavaConfig
from comm_tower.model.modeling import CommLlavaForCausalLM
from comm_tower.model.quantization import (
    KEEP_FLOAT_IN_COMM,
    KEEP_FLOAT_IN_LLM,
    quantization_config,
    safetensors_state_dict,
)
from comm_tower.model.tower_io import build_projector, build_tower_for_training
from comm_tower.model.zero import load_state_dict_gathered

logger = logging.getLogger(__name__)

PROJECTOR_FILE = "mm_projector.bin"  # stage 1 (`--tune_mm_mlp_adapter`) saves only this and config.json
NON_LORA_FILE = "non_lora_trainables.bin"  # a LoRA run's projector, saved next to its adapters


@dataclass(frozen=True)
class LoadOptions:
    """How weights load from a path: float dtype, device map, LLM quantisation (4, 8 or 16 bits), kernel."""

    dtype: torch.dtype | None = None
    device_map: str | dict[str, Any] | None = None
    bits: int = 16
    quant_type: str = "nf4"
    double_quant: bool = True
    attn_implementation: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.quantization([])  # bad bits or a missing bitsandbytes fail here, before any weight loads

    def quantization(self, keep_float: list[str]) -> object | None:
        """The BitsAndBytesConfig that leaves `keep_float` modules in floating point (None at 16 bits)."""
        compute = self.dtype or torch.float32
        return quantization_config(self.bits, compute, keep_float, self.quant_type, self.double_quant)

    def kwargs(self, keep_float: list[str]) -> dict[str, Any]:
        """`from_pretrained` kwargs: the settings that are set, and the quantisation config if any."""
        out: dict[str, Any] = {
            "dtype": self.dtype,
            "device_map": self.device_map,
            "attn_implementation": self.attn_implementation,
            "cache_dir": self.cache_dir,
            "quantization_config": self.quantization(keep_float),
        }
        return {key: value for key, value in out.items() if value is not None}


def is_comm_llava_checkpoint(path: str) -> bool:
    """Whether `path` holds a saved comm_llava model (rather than a plain causal LM)."""
    try:
        return AutoConfig.from_pretrained(path).model_type == MODEL_TYPE
    except (OSError, ValueError):
        return False


def from_pretrained(path: str, load: LoadOptions, keep_float: list[str]) -> PreTrainedModel:
    """The causal LM (plain or comm_llava) saved in `path`, loaded with `load`, `keep_float` left unquantised.

    Quantised from a local safetensors checkpoint, each weight is read from its file only when its turn comes
    (`safetensors_state_dict`), so the load's peak is the quantised model plus about one weight, not plus every
    shard's pages.
    """
    kwargs = load.kwargs(keep_float)
    weights = safetensors_state_dict(path) if load.bits != 16 and os.path.isdir(path) else None
    config = AutoConfig.from_pretrained(path) if weights is not None else None
    # the Auto class looks for a folder before it reads state_dict, so the model class itself is called
    mapping = AutoModelForCausalLM._model_mapping
    known = config is not None and type(config) in mapping and (config.dtype or load.dtype) is not None
    if weights is None or not known:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    kwargs.setdefault("dtype", config.dtype)  # what from_pretrained's "auto" reads from the saved config
    model = mapping[type(config)].from_pretrained(None, config=config, state_dict=weights, **kwargs)
    if model.can_generate() and os.path.isfile(os.path.join(path, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


def load_comm_llava(path: str, load: LoadOptions | None = None) -> CommLlavaForCausalLM:
    """A saved comm_llava model, whole (tower weights included); under 4/8 bits only LLM linears are quantised."""
    load = load or LoadOptions()
    model = from_pretrained(path, load, KEEP_FLOAT_IN_COMM + KEEP_FLOAT_IN_LLM)
    if not isinstance(model, CommLlavaForCausalLM):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a comm_llava model")
    return model


def assemble_model(
    llm: PreTrainedModel | str | os.PathLike[str],
    tower: str | CommLlavaConfig | None = None,
    mm_projector_type: str | None = None,
    load: LoadOptions | None = None,
    **mm_fields: Any,
) -> CommLlavaForCausalLM:
    """LLM + COMM tower + projector, for training and for loading checkpoints on a base LLM.

    `llm`: a loaded causal LM; the path of one (loaded with `load`, only its linear layers quantised); or the
    path of a saved comm_llava model, loaded whole (`tower` and the mm fields are then not used). `tower`: a
    tower name or preset (a new config with `mm_projector_type`, default linear, and `mm_fields`) or a saved
    `CommLlavaConfig` (its fields, overridden by those given). The tower comes from its encoder folders, frozen,
    and the projector is new; both go to the LLM's device in its floating-point dtype.
    """
    load = load or LoadOptions()
    if not isinstance(llm, PreTrainedModel):
        path = os.fspath(llm)
        if is_comm_llava_checkpoint(path):
            model = load_comm_llava(path, load)
            logger.info(
                "%s holds a comm_llava model; loaded it whole (tower %s)", path, model.config.mm_vision_tower
            )
            return model
        llm = from_pretrained(path, load, KEEP_FLOAT_IN_LLM)
    if tower is None:
        raise ValueError(
            "a plain LLM needs a vision tower: pass a zoo preset name or file (e.g. 'comm') or a saved "
            "comm_llava config"
        )
    config = _model_config(llm, tower, mm_projector_type, mm_fields)
    vision_tower = build_tower_for_training(config)
    projector = build_projector(config, vision_tower)
    param = next(llm.parameters())
    compute = param.dtype if param.dtype.is_floating_point else torch.float32
    vision_tower.to(device=param.device, dtype=compute)
    projector.to(device=param.device, dtype=compute)
    return CommLlavaForCausalLM(config, language_model=llm, vision_tower=vision_tower, mm_projector=projector)


def _model_config(
    llm: PreTrainedModel,
    tower: str | CommLlavaConfig,
    mm_projector_type: str | None,
    mm_fields: dict[str, Any],
) -> CommLlavaConfig:
    """A new config for a tower name, or a copy of a saved one; the LLM's config and attention kernel in it."""
    attn = llm.config._attn_implementation
    if isinstance(tower, CommLlavaConfig):
        config = copy.deepcopy(tower)
        config.text_config = llm.config
        config.sync_from_text_config()
        given = {"mm_projector_type": mm_projector_type, **mm_fields}
        for name, value in given.items():
            if value is not None:
                setattr(config, name, value)
    else:
        config = CommLlavaConfig(
            text_config=llm.config,
            mm_vision_tower=tower,
            mm_projector_type=mm_projector_type or "linear",
            **mm_fields,
        )
    config._attn_implementation = attn  # building the config reset the (shared) LLM config's kernel
    return config


def projector_weights(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """LLaVA-style keys -> projector-local keys (`model.mm_projector.0.weight` -> `0.weight`); others dropped."""
    marker = "mm_projector."
    out = {k.split(marker, 1)[1]: v for k, v in state.items() if marker in k}
    if not out:
        raise ValueError(f"{where}: no key contains 'mm_projector.'; keys start with {sorted(state)[:3]}")
    return out


def _projector_file(path: str) -> dict[str, torch.Tensor]:
    """A saved projector file (`mm_projector.bin`, `non_lora_trainables.bin`), as saved."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"projector file '{path}' (--pretrain_mm_mlp_adapter) does not exist; point it at stage 1's "
            f"{PROJECTOR_FILE}"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def load_projector(model: CommLlavaForCausalLM, path: str) -> None:
    """Load a saved projector (`mm_projector.bin`, `non_lora_trainables.bin`); ZeRO-3 shards are gathered."""
    load_projector_state(model, _projector_file(path), where=path)


def load_projector_state(model: CommLlavaForCausalLM, state: dict[str, torch.Tensor], where: str) -> None:
    """Load the projector from a state dict with LLaVA-style keys (`model.mm_projector.*`); `where` names it."""
    load_state_dict_gathered(model.model.mm_projector, projector_weights(state, where), where=where)
    logger.info("projector loaded from %s", where)


def load_lora(model: CommLlavaForCausalLM, lora_dir: str, merge: bool = True) -> nn.Module:
    """A LoRA run's output on `model`: its projector (`non_lora_trainables.bin`, when saved), then its adapters,
    merged into the LLM's weights (or kept, as a peft `PeftModel`, with `merge=False`)."""
    projector = os.path.join(lora_dir, NON_LORA_FILE)
    if os.path.isfile(projector):
        load_projector(model, projector)
    else:
        logger.warning("%s has no %s; the projector stays as assembled", lora_dir, NON_LORA_FILE)
    return apply_lora_adapters(model, lora_dir, merge)


def apply_lora_adapters(model: nn.Module, lora_dir: str, merge: bool = True) -> nn.Module:
    """The peft adapters saved in `lora_dir` on `model` (a comm_llava model, or a plain LLM whose module names
    the adapters were saved with), merged into its weights unless `merge=False` (then a peft `PeftModel`)."""
    try:
        from peft import PeftModel
    except ImportError as err:
        raise ImportError(
            f"{lora_dir} holds LoRA adapters; loading them needs peft: pip install peft ({err})"
        ) from err
    llm = getattr(model, "language_model", model)
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"):  # peft wraps bitsandbytes layers by these
        setattr(model, flag, bool(getattr(model, flag, False) or getattr(llm, flag, False)))
    peft_model = PeftModel.from_pretrained(model, lora_dir)
    if not merge:
        return peft_model
    merged = peft_model.merge_and_unload()
    logger.info("merged LoRA adapters from %s", lora_dir)
    return merged
