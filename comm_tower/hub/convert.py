"""LLaVA checkpoint with a COMM tower (trained through `llava_patch`) -> `comm_llava` checkpoint, same logits.

LLaVA saves `LlavaLlamaForCausalLM` (`model_type` `llava_llama`): the LLM's own keys (`model.layers.*`,
`lm_head.*`), the projector under `model.mm_projector.*`, and `config.json` = the LLM's config plus LLaVA's
`mm_*` fields, `mm_comm` (the resolved tower spec) among them. A LoRA run saves adapters on those same LLM
module names, `non_lora_trainables.bin` (the projector) and the config; stage 1 saves `mm_projector.bin`.

The conversion loads what LLaVA's `load_pretrained_model` loads, in the same way: the LLM from the checkpoint
(or from the base LLM, with the LoRA adapters merged), the tower from the encoder folders recorded in `mm_comm`
(`COMM_ENCODER_PATHS` moves them), the projector from the checkpoint. It assembles them with `assemble_model`,
records the chat format, and saves a full comm_llava checkpoint (tower weights included) into a temporary
folder that is renamed to the output folder only once everything is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from comm_tower.builders import is_comm_config, spec_of, tower_name_of
from comm_tower.data.templates import VERSION_TO_TEMPLATE
from comm_tower.inference.checkpoints import (
    ADAPTER_CONFIG,
    WEIGHT_FILES,
    CheckpointKind,
    checkpoint_kind,
    has_tokenizer,
)
from comm_tower.model import CommLlavaForCausalLM
from comm_tower.model.assembly import (
    NON_LORA_FILE,
    PROJECTOR_FILE,
    LoadOptions,
    apply_lora_adapters,
    assemble_model,
    load_projector_state,
)

logger = logging.getLogger(__name__)

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


def chat_template_for(conv_mode: str) -> str:
    """LLaVA's `--version` (or one of our template names) -> the conversation template to record."""
    if conv_mode not in VERSION_TO_TEMPLATE:
        raise ValueError(
            f"--conv-mode {conv_mode!r} is not known; use one of {', '.join(VERSION_TO_TEMPLATE)}"
        )
    return VERSION_TO_TEMPLATE[conv_mode]


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


def load_llm(ckpt: LlavaCheckpoint, model_base: str | None) -> PreTrainedModel:
    """The LLM as LLaVA's loader has it: from the checkpoint, or from the base with the LoRA adapters merged."""
    source = ckpt.path if ckpt.kind is CheckpointKind.FULL else str(model_base)
    options = LoadOptions(dtype=ckpt.dtype)
    logger.info("loading the LLM from %s", source)
    with (
        _quiet_transformers()
    ):  # it would list every tower and projector key as unexpected, and the model type
        llm = AutoModelForCausalLM.from_pretrained(source, config=text_config(ckpt), **options.kwargs([]))
    if ckpt.kind is CheckpointKind.LORA:
        llm = apply_lora_adapters(llm, ckpt.path)  # LLaVA's adapters sit on the LLM's own module names
    return llm


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings off while it reads a LLaVA folder: the LLM load would list every tower and projector
    key as unexpected (they are read apart), and config reads warn about model type llava_llama and 4.x fields."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(previous)


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


def build_comm_llava(
    ckpt: LlavaCheckpoint, model_base: str | None, conv_template: str, system_prompt: str | None
) -> CommLlavaForCausalLM:
    """The comm_llava model LLaVA's loader would build from `ckpt`, with the chat format recorded."""
    llm = load_llm(ckpt, model_base)
    config = ckpt.config
    kept = {k: config[k] for k in KEPT_FIELDS if config.get(k) is not None}
    model = assemble_model(
        llm,
        tower_name_of(SimpleNamespace(**config)),
        mm_projector_type=config.get("mm_projector_type", "linear"),
        mm_comm=config.get("mm_comm"),  # the resolved spec llava_patch saved; without it, the name resolves
        image_aspect_ratio=image_aspect_ratio(config),
        conv_template=conv_template,
        system_prompt=system_prompt,
        **kept,
    )
    state, where = projector_state(ckpt)
    load_projector_state(model, state, where)
    return model


def tokenizer_source(ckpt: LlavaCheckpoint, model_base: str | None) -> str:
    """Where LLaVA's loader takes the tokenizer from: the checkpoint (full runs save it), else the base LLM."""
    if ckpt.kind is CheckpointKind.FULL and has_tokenizer(ckpt.path):
        return ckpt.path
    if model_base:
        return model_base
    raise FileNotFoundError(
        f"{ckpt.path} holds no tokenizer; pass --model-base with the LLM it was trained on"
    )


def save_atomically(model: CommLlavaForCausalLM, tokenizer: Any, out: str) -> None:
    """Write model and tokenizer into a temporary folder beside `out`, then rename it to `out`."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".partial", dir=parent)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if os.path.exists(out):  # created while converting
            raise FileExistsError(
                f"output folder '{out}' appeared while converting; nothing was written to it"
            )
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_llava_checkpoint(
    llava_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model_base: str | None = None,
    conv_mode: str = "v1",
    system_prompt: str | None = None,
) -> Path:
    """Convert a COMM LLaVA checkpoint (full; LoRA or stage 1 with `model_base`) into a comm_llava folder `out`."""
    llava_path, out = os.fspath(llava_path), os.fspath(out)
    if os.path.exists(out):
        raise FileExistsError(f"output folder '{out}' already exists; choose a new folder or remove it")
    template = chat_template_for(conv_mode)
    ckpt = read_llava_checkpoint(llava_path, model_base)
    model = build_comm_llava(ckpt, model_base, template, system_prompt)
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(ckpt, model_base))
    save_atomically(model, tokenizer, out)
    logger.info(
        "converted %s LLaVA checkpoint %s -> %s (tower %s, template %s)",
        ckpt.kind.value,
        llava_path,
        out,
        model.config.mm_vision_tower,
        template,
    )
    return Path(out)
