"""Shared pieces for the data tests: a tiny locally trained tokenizer, a small processor, data files."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

from PIL import Image
from transformers import AutoTokenizer

from comm_tower.processor import CommImageProcessor
from comm_tower.zoo.tiny_lm import build_tiny_llama

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 16


@functools.lru_cache(maxsize=1)
def tiny_llm_dir() -> Path:
    """A tiny Llama + tokenizer built once per machine (rebuilt only if the builder's settings change)."""
    root = Path(tempfile.gettempdir()) / f"comm_tower_test_tiny_lm_{os.getuid()}"
    return build_tiny_llama(root)


def tokenizer(max_length: int = 512):
    """The tiny tokenizer, loaded fresh (tests may change model_max_length)."""
    tok = AutoTokenizer.from_pretrained(tiny_llm_dir())
    tok.model_max_length = max_length
    return tok


def processor() -> CommImageProcessor:
    """A CLIP-like processor at a tiny crop size."""
    return CommImageProcessor(SIZE, MEAN, STD)


def enc(tok, text: str) -> list[int]:
    """Token ids of `text` alone, no special tokens added."""
    return tok(text, add_special_tokens=False)["input_ids"]


def write_json(path: Path, records: list) -> Path:
    """Write records as a JSON list (.json) or one per line (.jsonl)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def save_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (24, 12), color=(200, 30, 30)) -> str:
    """Save a flat-colour image and return its file name."""
    Image.new(mode, size, color).save(path)
    return path.name


def conv(question: str, answer: str) -> list[dict]:
    """A one-round LLaVA conversation."""
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
