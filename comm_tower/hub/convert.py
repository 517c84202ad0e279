"""LLaVA checkpoint with a COMM tower (trained through `llava_patch`) -> `comm_llava` checkpoint, same logits.

The conversion loads what LLaVA's `load_pretrained_model` loads, in the same way: the LLM from the checkpoint
(or from the base LLM, with the LoRA adapters merged), the tower from the encoder folders recorded in `mm_comm`
(`COMM_ENCODER_PATHS` moves them), the projector from the checkpoint. It assembles them with `assemble_model`,
records the chat format, and saves a full comm_llava checkpoint (tower weights included) into a temporary
folder that is renamed to the output folder only once everything is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from comm_tower.builders import tower_name_of
from comm_tower.data.templates import VERSION_TO_TEMPLATE
from comm_tower.hub.llava_checkpoint import (
    KEPT_FIELDS,
    LlavaCheckpoint,
    image_aspect_ratio,
    projector_state,
    read_llava_checkpoint,
    text_config,
)
from comm_tower.inference.checkpoints import CheckpointKind, has_tokenizer
from comm_tower.model import CommLlavaForCausalLM
from comm_tower.model.assembly import LoadOptions, apply_lora_adapters, assemble_model, load_projector_state

logger = logging.getLogger(__name__)


def chat_template_for(conv_mode: str) -> str:
    """LLaVA's `--version` (or one of our template names) -> the conversation template to record."""
    if conv_mode not in VERSION_TO_TEMPLATE:
        raise ValueError(
            f"--conv-mode {conv_mode!r} is not known; use one of {', '.join(VERSION_TO_TEMPLATE)}"
        )
    return VERSION_TO_TEMPLATE[conv_mode]


def load_llm(ckpt: LlavaCheckpoint, model_base: str | None) -> PreTrainedModel:
    """The LLM as LLaVA's loader has it: from the checkpoint, or from the base with the LoRA adapters merged."""
    source = ckpt.path if ckpt.kind is CheckpointKind.FULL else str(model_base)
    options = LoadOptions(dtype=ckpt.dtype)
    logger.info("loading the LLM from %s", source)
    with _quiet_transformers():
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
    tokenizer_path = tokenizer_source(ckpt, model_base)
    model = build_comm_llava(ckpt, model_base, template, system_prompt)
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
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
