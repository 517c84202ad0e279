"""4-bit and 8-bit loading: the bitsandbytes config, and which layers it must leave alone (all but the LLM's)."""

from __future__ import annotations

import torch

# Modules that stay in floating point under 4/8 bits: the COMM tower, the projector and the LLM's output head.
# Patterns are matched by transformers from the start of a module name up to a dot ("model.vision_tower" keeps
# every encoder layer) or as a suffix ("lm_head" keeps "language_model.lm_head").
KEEP_FLOAT_IN_COMM = ["model.vision_tower", "model.mm_projector"]
KEEP_FLOAT_IN_LLM = ["lm_head", "embed_out", "output_layer"]

QUANTIZED_LINEAR = {"Linear4bit": "4-bit", "Linear8bitLt": "8-bit"}  # bitsandbytes class -> weight kind
BITS = (4, 8, 16)


def quantization_config(
    bits: int,
    compute_dtype: torch.dtype,
    keep_float: list[str],
    quant_type: str = "nf4",
    double_quant: bool = True,
) -> object | None:
    """A BitsAndBytesConfig for `bits` (4: `quant_type` + optional double quantisation; 8: int8) that leaves
    `keep_float` modules alone; None at 16 bits."""
    if bits not in BITS:
        raise ValueError(f"bits={bits}: use one of {BITS}")
    if bits == 16:
        return None
    try:
        import bitsandbytes  # noqa: F401 - fail here, with the fix, rather than deep inside from_pretrained
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise ImportError(
            f"loading in {bits} bits needs bitsandbytes ({err}); fix: pip install 'comm-tower[quant]'"
        ) from err
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_type,
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=list(keep_float),
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(keep_float))


def is_quantized_module(module: torch.nn.Module) -> bool:
    """Whether `module` is a bitsandbytes 4-bit or 8-bit linear layer."""
    return type(module).__name__ in QUANTIZED_LINEAR
