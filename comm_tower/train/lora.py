"""LoRA / QLoRA with peft: target modules found by walking the LLM only, never the vision tower or projector."""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

_SKIP = ("lm_head", "embed_out", "output_layer")


def _is_linear(module: nn.Module) -> bool:
    """Plain, 8-bit or 4-bit linear layers (bitsandbytes classes subclass nn.Linear)."""
    return isinstance(module, nn.Linear)


def find_lora_targets(model: nn.Module, llm_attr: str = "language_model") -> list[str]:
    """Full module paths of the LLM's linear layers (output head excluded), for peft's `target_modules`.

    peft matches a target by exact name or by `.`-suffix; full paths under `language_model.` can only match
    LLM modules, so no adapter lands in the tower (LLaVA #1647).
    """
    llm = getattr(model, llm_attr)
    names = [
        f"{llm_attr}.{name}"
        for name, module in llm.named_modules()
        if _is_linear(module) and not any(name.split(".")[-1] == s for s in _SKIP)
    ]
    if not names:
        raise ValueError(f"no linear layers found in {type(llm).__name__}; cannot place LoRA adapters")
    return names


def add_lora(model: nn.Module, r: int, alpha: int, dropout: float, bias: str, quantized: bool) -> nn.Module:
    """Wrap `model` with peft LoRA adapters on the LLM's linear layers; returns the PeftModel."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        # Casts norms to fp32 and makes inputs require grad, so adapters of a 4/8-bit LLM get gradients.
        model.language_model = prepare_model_for_kbit_training(
            model.language_model, use_gradient_checkpointing=False
        )
    targets = find_lora_targets(model)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias=bias, target_modules=targets)
    logger.info("LoRA r=%d alpha=%d on %d LLM linear layers (none in the tower)", r, alpha, len(targets))
    return get_peft_model(model, config)
