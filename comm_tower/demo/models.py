"""The demo's model zoo entry: tiny random encoders and a tiny Llama whose tokenizer is trained on the data.

Both are built once and cached (encoders under `$COMM_TINY_DIR`, the LLM under the demo cache keyed by a
fingerprint of its corpus and size), so a second run starts at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from comm_tower.data.templates import VicunaV1Template
from comm_tower.zoo.tiny import default_tiny_dir, ensure_tiny_encoders
from comm_tower.zoo.tiny_lm import build_tiny_llama


@dataclass(frozen=True)
class LlmSize:
    """Width, depth and vocabulary of the demo's tiny Llama."""

    hidden_size: int = 128
    layers: int = 4
    heads: int = 8
    vocab_size: int = 512
    max_length: int = 256
    # Standard deviation of the random weights: with Llama's 0.02 a demo-sized run stays at the blind baseline
    # on yes/no, with 0.1 it ends well above it (docs/demo.md).
    init_std: float = 0.1


def default_cache_dir() -> Path:
    """`$COMM_DEMO_CACHE`, else `~/.cache/comm_tower/demo`."""
    return Path(os.environ.get("COMM_DEMO_CACHE") or Path.home() / ".cache" / "comm_tower" / "demo")


def corpus_from_data(data_dir: Path) -> list[str]:
    """Every turn of the stage-1 and stage-2 files (image tags removed): the tokenizer's training text."""
    texts = []
    for name in ("stage1.json", "stage2.json"):
        for sample in json.loads((Path(data_dir) / name).read_text()):
            texts += [
                t["value"].replace("<image>\n", "").replace("<image>", "") for t in sample["conversations"]
            ]
    # the chat template's own words, so the prompt does not fall apart into single bytes
    texts.append(f"{VicunaV1Template.system} USER: ASSISTANT:")
    return texts


def ensure_demo_models(
    data_dir: Path, cache_dir: Path | None = None, size: LlmSize | None = None
) -> dict[str, Path]:
    """Tiny encoders (shared with the tiny presets) and the demo LLM; built only when missing."""
    size = size or LlmSize()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    encoders = ensure_tiny_encoders(default_tiny_dir())
    folder = f"llm-h{size.hidden_size}-l{size.layers}-a{size.heads}-v{size.vocab_size}-i{size.init_std:g}"
    llm = build_demo_llm(cache / folder, size, corpus=corpus_from_data(data_dir))
    return {**encoders, "llm": llm}


def build_demo_llm(out: Path, size: LlmSize | None = None, corpus: list[str] | None = None) -> Path:
    """A random tiny Llama of `size` (the demo's by default), its tokenizer trained on `corpus`, saved in `out`."""
    size = size or LlmSize()
    return build_tiny_llama(
        out,
        corpus=corpus,
        vocab_size=size.vocab_size,
        hidden_size=size.hidden_size,
        layers=size.layers,
        heads=size.heads,
        model_max_length=size.max_length,
        init_std=size.init_std,
    )
