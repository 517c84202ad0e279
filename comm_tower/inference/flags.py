"""The chat-format and decoding flags every command that asks a model shares (comm-chat, comm-web, comm-eval).

Kept free of torch and transformers imports, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which checkpoint to load and how: --model-path, --model-base, --device, --dtype, --load-4bit/8bit."""
    p.add_argument("--model-path", required=True, help="comm-train output folder (full, stage-1 or LoRA)")
    p.add_argument("--model-base", default=None, help="base LLM for projector-only and LoRA checkpoints")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if present)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "float16", "bfloat16"],
        help="tower/projector/LLM compute dtype (default: float32 on CPU, float16 on GPU)",
    )
    quant = p.add_mutually_exclusive_group()
    quant.add_argument(
        "--load-4bit", action="store_true", help="LLM in NF4 (bitsandbytes); tower stays float"
    )
    quant.add_argument(
        "--load-8bit", action="store_true", help="LLM in int8 (bitsandbytes); tower stays float"
    )


def add_generation_arguments(p: argparse.ArgumentParser, beams: bool = False) -> None:
    """--conv-mode, --system-prompt, --max-new-tokens, --temperature, --top-p (and --num-beams)."""
    p.add_argument(
        "--conv-mode",
        default=None,
        help="conversation template: vicuna_v1, plain, chat_template (default: the one the checkpoint was "
        "trained with, else vicuna_v1)",
    )
    p.add_argument(
        "--system-prompt",
        default=None,
        help="system prompt (default: the one the checkpoint was trained with; 'default': the template's own)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="longest answer (default: all that fits the context after the prompt and image; "
        "a larger value is capped to that)",
    )
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); above 0 samples")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling (with --temperature > 0)")
    if beams:
        p.add_argument("--num-beams", type=int, default=1, help="beam search width (1 = none)")


def check_generation_arguments(args: argparse.Namespace) -> str | None:
    """The first bad value among those flags as a one-line message naming the flag, or None."""
    from comm_tower.data.templates import TEMPLATES

    if args.conv_mode is not None and args.conv_mode not in TEMPLATES:
        return f"--conv-mode {args.conv_mode}: use one of {', '.join(TEMPLATES.names())}"
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        return f"--max-new-tokens {args.max_new_tokens}: must be at least 1 (or leave it out: all that fits)"
    if args.temperature < 0:
        return f"--temperature {args.temperature}: must be >= 0 (0 = greedy)"
    if getattr(args, "num_beams", 1) < 1:
        return f"--num-beams {args.num_beams}: must be at least 1"
    return None


def generation_config(args: argparse.Namespace) -> Any:
    """The `GenerationConfig` those flags ask for."""
    from comm_tower.inference.generation import GenerationConfig

    return GenerationConfig(args.max_new_tokens, args.temperature, args.top_p, getattr(args, "num_beams", 1))
