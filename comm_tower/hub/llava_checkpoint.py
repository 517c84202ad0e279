"""A LLaVA output folder, read and checked: its kind, its config split into the LLM's and LLaVA's fields, and
its projector weights (`comm-convert`'s input; see `convert.py`).

LLaVA saves `LlavaLlamaForCausalLM` (`model_type` `llava_llama`): the LLM's own keys (`model.layers.*`,
`lm_head.*`), the projector under `model.mm_projector.*`, and `config.json` = the LLM's config plus LLaVA's
`mm_*` fields, `mm_comm` (the resolved tower spec) among them. A LoRA run saves adapters on those same LLM
module names, `non_lora_trainables.bin` (the projector) and the config; stage 1 saves `mm_projector.bin`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from transformers import AutoConfig

from comm_tower.builders import is_comm_config, spec_of, tower_name_of
from comm_tower.inference.checkpoints import (
    ADAPTER_CONFIG,
    WEIGHT_FILES,
    CheckpointKind,
    checkpoint_kind,
)
from comm_tower.model.assembly import NON_LORA_FILE, PROJECTOR_FILE

# LLaVA model types whose LLM keys and config are those of an HF causal LM of this type
LLM_TYPE_OF = {"llava_llama": "llama", "llava_mistral": "mistral"}
# config fields that are LLaVA's, not the LLM's (besides every `mm_*` field)
LLAVA_FIELDS = (
    "architectures",
    "model_type",
    "image_aspect_ratio",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "unfreeze_mm_vision_tower",
    "use_mm_proj",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "_name_or_path",
)
# LLaVA fields the comm_llava config keeps as they are
KEPT_FIELDS = (
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_patch_merge_type",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
)


@dataclass(frozen=True)
class LlavaCheckpoint:
    """A LLaVA output folder: its kind (full, stage-1 projector, LoRA) and its `config.json`."""

    path: str
    kind: CheckpointKind
    config: dict[str, Any]

    @property
    def llm_type(self) -> str:
        """The HF model type of its LLM (`llama` for `llava_llama`)."""
        return LLM_TYPE_OF[self.config["model_type"]]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype it was saved in (float32 when the config does not say)."""
        name = self.config.get("torch_dtype") or self.config.get("dtype") or "float32"
        return getattr(torch, name)


def read_llava_checkpoint(path: str, model_base: str | None) -> LlavaCheckpoint:
    """Check that `path` is a LLaVA checkpoint with a COMM tower this converter reproduces; errors name the fix."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"LLaVA checkpoint '{path}' is not a folder; point it at LLaVA's --output_dir"
        )
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file} does not exist; point comm-convert at LLaVA's --output_dir")
    try:
        with open(config_file) as fh:
            config = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON ({err})") from err
    model_type = config.get("model_type")
    if model_type not in LLM_TYPE_OF:
        raise ValueError(
            f"{config_file} has model_type {model_type!r}; comm-convert reads LLaVA checkpoints of type "
            f"{', '.join(LLM_TYPE_OF)} (a comm_llava checkpoint needs no conversion)"
        )
    fields = SimpleNamespace(**config)
    if not is_comm_config(fields):
        raise ValueError(
            f"{path} is a LLaVA checkpoint with vision tower {tower_name_of(fields)!r}, not a COMM tower "
            "(its config.json has no mm_comm); comm-convert converts checkpoints trained with --vision_tower "
            "comm (or another COMM preset) through llava_patch"
        )
    _check_supported(config, config_file)
    _check_encoder_folders(fields, config_file)
    try:
        kind = checkpoint_kind(path)
    except ValueError:
        raise FileNotFoundError(
            f"{path} holds no weights: none of {', '.join(WEIGHT_FILES)}, no {ADAPTER_CONFIG} (LoRA) and no "
            f"{PROJECTOR_FILE} (stage 1); point comm-convert at the folder LLaVA's train() saved to"
        ) from None
    if kind is not CheckpointKind.FULL and not model_base:
        what = (
            f"LoRA adapters ({ADAPTER_CONFIG})" if kind is CheckpointKind.LORA else f"only {PROJECTOR_FILE}"
        )
        raise ValueError(
            f"{path} holds {what}; pass --model-base with the LLM it was trained on (LLaVA's "
            "--model_name_or_path)"
        )
    if kind is CheckpointKind.LORA and not os.path.isfile(os.path.join(path, NON_LORA_FILE)):
        raise FileNotFoundError(
            f"{path} holds LoRA adapters but no {NON_LORA_FILE} (the trained projector LLaVA saves beside "
            "them); copy it from the training run's output folder"
        )
    return LlavaCheckpoint(path=path, kind=kind, config=config)


def _check_supported(config: dict[str, Any], where: str) -> None:
    """Refuse LLaVA options a comm_llava model does not reproduce (it splices features at <image> only)."""
    for flag in ("mm_use_im_start_end", "mm_use_im_patch_token"):
        if config.get(flag):
            raise ValueError(f"{where}: {flag} is true; comm_llava models splice features at <image> only")
    if config.get("mm_patch_merge_type", "flat") != "flat":
        raise ValueError(
            f"{where}: mm_patch_merge_type {config['mm_patch_merge_type']!r}; only 'flat' converts"
        )
    ratio = config.get("image_aspect_ratio")
    if ratio is not None and ratio.startswith("anyres"):
        raise ValueError(
            f"{where}: image_aspect_ratio {ratio!r} (LLaVA-NeXT tiles) does not convert; 'pad' does"
        )


def image_aspect_ratio(config: dict[str, Any]) -> str:
    """LLaVA 1.5 pads to square for 'pad' and hands the image to the processor as it is for anything else."""
    return "pad" if config.get("image_aspect_ratio") == "pad" else "square"


def _check_encoder_folders(fields: SimpleNamespace, where: str) -> None:
    """The encoders are read from the folders `mm_comm` records (moved by `COMM_ENCODER_PATHS`): they must exist."""
    spec = spec_of(fields)
    missing = [
        (enc.name, enc.path)
        for enc in spec.encoders
        if os.path.isabs(enc.path) and not os.path.isdir(enc.path)
    ]
    if missing:
        named = ", ".join(f"{name} at '{path}'" for name, path in missing)
        fix = ",".join(f"{name}=/new/dir" for name, _ in missing)
        raise FileNotFoundError(
            f"{where}: the tower's encoder folders do not exist ({named}); the converter reads the encoders "
            f"from them, as LLaVA's loader does: set COMM_ENCODER_PATHS={fix} to where they are now"
        )


def text_config(ckpt: LlavaCheckpoint) -> Any:
    """The LLM's own config: LLaVA's config without its `mm_*` and run fields."""
    fields = {
        k: v
        for k, v in ckpt.config.items()
        if v is not None and not k.startswith("mm_") and k not in LLAVA_FIELDS  # None: the LLM's default
    }
    return AutoConfig.for_model(ckpt.llm_type, **fields)


def projector_state(ckpt: LlavaCheckpoint) -> tuple[dict[str, torch.Tensor], str]:
    """The trained projector's tensors (LLaVA-style keys) and the file they come from."""
    if ckpt.kind is CheckpointKind.FULL:
        return _tensors_with(ckpt.path, "mm_projector."), os.path.join(ckpt.path, "model weights")
    name = NON_LORA_FILE if ckpt.kind is CheckpointKind.LORA else PROJECTOR_FILE
    where = os.path.join(ckpt.path, name)
    state = torch.load(where, map_location="cpu", weights_only=True)
    others = sorted(k for k in state if "mm_projector." not in k)
    if others:  # LLaVA would load these into the LLM too (e.g. new token embeddings); not reproduced here
        raise ValueError(f"{where} holds weights besides the projector ({others[:3]}); they do not convert")
    return state, where


def _tensors_with(folder: str, marker: str) -> dict[str, torch.Tensor]:
    """The tensors whose key contains `marker`, from a full checkpoint's weight files (sharded or not)."""
    files = _weight_files(folder)
    out: dict[str, torch.Tensor] = {}
    for file in files:
        if file.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(file, framework="pt") as fh:
                out.update({k: fh.get_tensor(k) for k in fh.keys() if marker in k})  # noqa: SIM118 - not a dict
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            out.update({k: v for k, v in state.items() if marker in k})
    return out


def _weight_files(folder: str) -> list[str]:
    """The weight files of a full checkpoint, in LLaVA's (HF's) naming: one file or an index of shards."""
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if not name.endswith(".index.json"):
            return [path]
        with open(path) as fh:
            shards = sorted(set(json.load(fh)["weight_map"].values()))
        return [os.path.join(folder, shard) for shard in shards]
    raise FileNotFoundError(f"{folder} holds none of {', '.join(WEIGHT_FILES)}")
