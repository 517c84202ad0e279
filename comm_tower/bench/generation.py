"""Chat-path generation: first-token latency, decode tokens/s and peak memory, per load mode (default fp32 and
4-bit through bitsandbytes; `gpu_check` runs fp16 and 4-bit with fp16 compute on a GPU)."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from comm_tower.bench.llm import save_checkpoint
from comm_tower.bench.report import Row
from comm_tower.bench.sizes import BenchSize
from comm_tower.bench.timing import peak_memory_mib
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.chat import ChatSession
from comm_tower.inference.generation import GenerationConfig

logger = logging.getLogger(__name__)
QUESTION = "Describe the image in detail."
CPU_MODES: dict[str, dict[str, Any]] = {"fp32": {}, "4bit": {"load_4bit": True}}


def _session(path: Path, load: dict[str, Any], new_tokens: int, device: str) -> ChatSession:
    assistant = Assistant.load(str(path), device=device, **load)
    session = ChatSession(assistant, GenerationConfig(max_new_tokens=new_tokens))
    rng = np.random.default_rng(0)
    session.set_image(Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)))
    return session


def _generate(session: ChatSession, kwargs: dict[str, Any], new_tokens: int) -> float:
    args = dict(kwargs, max_new_tokens=new_tokens, min_new_tokens=new_tokens)  # same length every run
    t = time.perf_counter()
    out = session.model.generate(**args)
    elapsed = time.perf_counter() - t
    if out.shape[-1] != new_tokens:
        raise RuntimeError(f"generate returned {out.shape[-1]} tokens, expected {new_tokens}")
    return elapsed


def run(
    size: BenchSize,
    preset: Path,
    root: Path,
    repeats: int,
    new_tokens: int = 32,
    modes: dict[str, dict[str, Any]] | None = None,
    device: str = "cpu",
    save_dtype: torch.dtype = torch.float32,
) -> list[Row]:
    """Load the checkpoint once per mode (`load_pretrained_model` keyword arguments; the first mode is the
    baseline); interleave first-token and full-answer runs of all. Peak memory per mode: what its load and
    one answer add above what was live before it (CUDA: allocator peak; CPU: allocator events)."""
    path = save_checkpoint(size, preset, root, save_dtype)
    modes = modes or CPU_MODES
    sessions: dict[str, ChatSession] = {}
    peaks: dict[str, float] = {}
    for name, load in modes.items():

        def load_and_answer(name: str = name, load: dict[str, Any] = load) -> None:
            sessions[name] = _session(path, load, new_tokens, device)
            s = sessions[name]
            _generate(s, s.generate_kwargs(s.prompt_ids(QUESTION)), 2)

        peaks[name] = peak_memory_mib(load_and_answer, torch.device(device))
    kwargs = {name: s.generate_kwargs(s.prompt_ids(QUESTION)) for name, s in sessions.items()}
    first: dict[str, list[float]] = {n: [] for n in modes}
    full: dict[str, list[float]] = {n: [] for n in modes}
    for name in modes:  # warm-up
        _generate(sessions[name], kwargs[name], 2)
    for r in range(repeats):
        for name in list(modes) if r % 2 == 0 else list(modes)[::-1]:
            first[name].append(_generate(sessions[name], kwargs[name], 1))
            full[name].append(_generate(sessions[name], kwargs[name], new_tokens))
    ref = next(iter(modes))
    prompt_len = sessions[ref].assistant.positions(kwargs[ref]["inputs"][0].tolist())
    rows = []
    for name in modes:
        t1, tn = statistics.median(first[name]), statistics.median(full[name])
        rest = statistics.median(f - s for f, s in zip(full[name], first[name]))  # paired: same repeat
        decode = (new_tokens - 1) / rest if rest > 0 else None
        rows.append(
            Row(
                bench="generation",
                size=size.name,
                name=f"chat_{name}",
                batch=1,
                median_s=tn,
                spread=(max(full[name]) - min(full[name])) / tn,
                throughput=new_tokens / tn,
                unit="tok/s",
                peak_mib=peaks[name],
                vs=f"chat_{ref}" if name != ref else None,
                ratio=tn / statistics.median(full[ref]) if name != ref else None,
                extra={
                    "first_token_s": t1,
                    "decode_tok_per_s": decode,
                    "new_tokens": new_tokens,
                    "prompt_positions": prompt_len,
                    "load": {k: str(v) for k, v in modes[name].items()},
                    "llm": f"{size.llm_layers} Llama blocks of width {size.llm_width} (random)",
                    "llm_linear": type(
                        sessions[name].model.language_model.model.layers[0].mlp.up_proj
                    ).__name__,
                },
            )
        )
    return rows
