"""What kind of checkpoint a folder holds: a full model, a stage-1 projector, or LoRA adapters."""

from __future__ import annotations

import enum
import json
import os

from comm_tower.model.assembly import PROJECTOR_FILE

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class CheckpointKind(enum.Enum):
    """How a checkpoint folder must be loaded."""

    FULL = "full"  # every weight, tower included (comm-train stage 2, or save_pretrained)
    PROJECTOR = "projector"  # stage 1: config + mm_projector.bin; the LLM comes from --model-base
    LORA = "lora"  # LoRA adapters (+ non_lora_trainables.bin); merged into --model-base on load


def _has(path: str, name: str) -> bool:
    return os.path.isfile(os.path.join(path, name))


def has_tokenizer(path: str) -> bool:
    """Whether `path` holds tokenizer files."""
    return any(_has(path, f) for f in TOKENIZER_FILES)


def model_type(path: str) -> str | None:
    """`model_type` in `path/config.json`, or None when there is no readable config."""
    try:
        with open(os.path.join(path, "config.json")) as fh:
            return json.load(fh).get("model_type")
    except (OSError, json.JSONDecodeError):
        return None


def checkpoint_kind(model_path: str) -> CheckpointKind:
    """Classify `model_path` by its files; a folder that holds none of the three is a clear error."""
    if not os.path.isdir(model_path):
        raise FileNotFoundError(
            f"--model-path '{model_path}' is not a folder; point it at a comm-train output directory"
        )
    if _has(model_path, ADAPTER_CONFIG):
        return CheckpointKind.LORA
    if any(_has(model_path, f) for f in WEIGHT_FILES):
        return CheckpointKind.FULL
    if _has(model_path, PROJECTOR_FILE):
        return CheckpointKind.PROJECTOR
    raise ValueError(
        f"{model_path} holds no model weights ({', '.join(WEIGHT_FILES[::2])}), no {PROJECTOR_FILE} and no "
        f"{ADAPTER_CONFIG}; point --model-path at a comm-train output directory"
    )
