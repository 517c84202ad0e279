#!/usr/bin/env python
"""Tokens/s and peak memory of a comm_llava training step, for a tiny and a mid-sized configuration.

Random weights built locally (no download). A step = `model(**batch)` (tower, projector, splice, LLM, loss)
+ backward + AdamW, for stage 1 (projector only) or stage 2 (projector + LLM). Tokens counted are the LLM's
positions after splicing (text + visual tokens). Peak memory: CUDA max allocated on GPU, peak RSS on CPU.

    python scripts/bench_train.py                       # tiny and mid, stage 2, GPU if there is one
    python scripts/bench_train.py --configs mid --device cuda --dtype bf16 --batch 8 --stage 1
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlamaForCausalLM,
)

from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.model import assemble_model
from comm_tower.train.freeze import apply_plan, plan_for


@dataclass(frozen=True)
class BenchConfig:
    """Encoder and LLM shapes of one benchmark configuration."""

    enc_width: int
    enc_depth: int
    enc_heads: int
    image: int
    patch: int
    llm_width: int
    llm_layers: int
    llm_heads: int
    vocab: int


CONFIGS = {
    "tiny": BenchConfig(64, 4, 4, 64, 8, 64, 2, 4, 384),
    "mid": BenchConfig(384, 6, 6, 224, 14, 1024, 8, 16, 32000),
}


def build(cfg: BenchConfig, root: Path, device: torch.device, dtype: torch.dtype, stage: int):
    """Random encoders saved to `root`, a random Llama, wrapped as comm_llava with the tiny-comm recipe."""
    common = dict(
        hidden_size=cfg.enc_width,
        num_hidden_layers=cfg.enc_depth,
        num_attention_heads=cfg.enc_heads,
        intermediate_size=4 * cfg.enc_width,
        patch_size=cfg.patch,
    )
    CLIPVisionModel(CLIPVisionConfig(image_size=cfg.image, **common)).save_pretrained(root / "clip")
    Dinov2Model(Dinov2Config(image_size=cfg.image + cfg.patch, **common)).save_pretrained(root / "dinov2")
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=cfg.vocab,
            hidden_size=cfg.llm_width,
            num_hidden_layers=cfg.llm_layers,
            num_attention_heads=cfg.llm_heads,
            intermediate_size=4 * cfg.llm_width,
        )
    )
    llm.config._attn_implementation = "sdpa"
    tower = f"tiny-comm:clip={root / 'clip'},dinov2={root / 'dinov2'}"
    model = assemble_model(llm, tower, "mlp2x_gelu").to(device=device, dtype=dtype)
    apply_plan(model, plan_for(stage == 1, False, False, False))
    return model


def make_batch(model, batch: int, text: int, device: torch.device, dtype: torch.dtype) -> dict:
    """One `<image>` then `text` random ids per sample, all text tokens labelled."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (batch, text + 1), generator=g)
    ids[:, 0] = IMAGE_TOKEN_INDEX
    labels = ids.clone()
    labels[:, 0] = IGNORE_INDEX
    size = model.get_vision_tower().image_size
    images = torch.randn(batch, 3, size, size, generator=g)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
        "images": images.to(device=device, dtype=dtype),
    }


def peak_mib(device: torch.device) -> float:
    """CUDA max allocated, or this process's peak RSS, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(name: str, args: argparse.Namespace) -> dict:
    """Build, warm up, time `args.steps` training steps; return the figures."""
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = build(CONFIGS[name], Path(tmp), device, dtype, args.stage)
    model.train()
    b = make_batch(model, args.batch, args.text_tokens, device, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    tokens = args.batch * (args.text_tokens + model.get_vision_tower().num_patches)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [step() for _ in range(args.steps)]
    med = statistics.median(times)
    return {
        "config": name,
        "device": str(device),
        "dtype": args.dtype,
        "stage": args.stage,
        "batch": args.batch,
        "tokens_per_step": tokens,
        "trainable_M": sum(p.numel() for p in params) / 1e6,
        "total_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s": med,
        "tokens_per_s": tokens / med,
        "peak_mib": peak_mib(device),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse flags, run each configuration, print one line per configuration."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,mid", help=f"comma list of {sorted(CONFIGS)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype", default="bf16" if torch.cuda.is_available() else "fp32", choices=["fp32", "bf16", "fp16"]
    )
    p.add_argument("--stage", type=int, default=2, choices=[1, 2])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--text_tokens", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    header = f"{'config':<6} {'device':<7} {'dtype':<5} stage batch tokens/step "
    header += "params(M) train(M) step(s) tokens/s peak(MiB)"
    print(header)
    for name in args.configs.split(","):
        if name not in CONFIGS:
            sys.exit(f"--configs: unknown '{name}'; use {sorted(CONFIGS)}")
        r = bench(name, args)
        print(
            f"{r['config']:<6} {r['device']:<7} {r['dtype']:<5} {r['stage']:>5} {r['batch']:>5} "
            f"{r['tokens_per_step']:>11} "
            f"{r['total_M']:>9.1f} {r['trainable_M']:>8.1f} {r['step_s']:>7.3f} {r['tokens_per_s']:>8.0f} "
            f"{r['peak_mib']:>9.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
