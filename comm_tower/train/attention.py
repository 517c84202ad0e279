"""Pick the LLM's attention kernel: the best one installed unless the user names one."""

from __future__ import annotations

import logging

import torch
from transformers.utils import is_flash_attn_2_available

logger = logging.getLogger(__name__)


def pick_attention(requested: str = "auto") -> str:
    """`auto` -> flash_attention_2 if installed, else sdpa, else eager; a named kernel is checked and kept."""
    if requested == "auto":
        if is_flash_attn_2_available():
            chosen = "flash_attention_2"
        elif hasattr(torch.nn.functional, "scaled_dot_product_attention"):
            chosen = "sdpa"
        else:
            chosen = "eager"
        logger.info("attention: %s (auto: the best one installed)", chosen)
        return chosen
    if requested == "flash_attention_2" and not is_flash_attn_2_available():
        raise ValueError(
            "--attn_implementation flash_attention_2: flash-attn is not installed (or no CUDA GPU); "
            "install flash-attn, or pass sdpa / eager / auto"
        )
    if requested not in ("flash_attention_2", "sdpa", "eager"):
        raise ValueError(f"--attn_implementation {requested!r}: use auto, flash_attention_2, sdpa or eager")
    logger.info("attention: %s (requested)", requested)
    return requested
