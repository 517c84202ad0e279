"""Device, dtype and bitsandbytes settings for inference: only the LLM is ever quantised."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

# Modules that stay in floating point under --load-4bit / --load-8bit: the COMM tower, the projector and the
# LLM's output head. Patterns are matched by transformers from the start of a module name up to a dot
# ("model.vision_tower" keeps every encoder layer) or as a suffix ("lm_head" keeps "language_model.lm_head").
KEEP_FLOAT_IN_COMM = ["model.vision_tower", "model.mm_projector"]
KEEP_FLOAT_IN_LLM = ["lm_head", "embed_out", "output_layer"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device ('cpu' when None); a CUDA device that is not there is a clear error."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here; pick cuda:0.."
            )
        dev = torch.device("cuda", index)
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    return dev


def resolve_dtype(device: torch.device, dtype: torch.dtype | str | None) -> torch.dtype:
    """The float dtype tower, projector and LLM compute in: fp32 on CPU, fp16 on GPUs, unless one is given."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype '{dtype}' is not supported; use one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.float16
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        logger.warning("%s does not support bfloat16; using float16", torch.cuda.get_device_name(device))
        return torch.float16
    if dtype == torch.float16 and device.type == "cpu":
        logger.warning("float16 on CPU is slow and some CPU kernels lack it; float32 or bfloat16 is better")
    return dtype


def quantization_config(
    load_4bit: bool, load_8bit: bool, compute_dtype: torch.dtype, keep_float: list[str]
) -> object | None:
    """A BitsAndBytesConfig (NF4 + double quantisation, or int8) that leaves `keep_float` modules alone."""
    if load_4bit and load_8bit:
        raise ValueError("--load-4bit and --load-8bit were both given; pick one")
    if not (load_4bit or load_8bit):
        return None
    try:
        import bitsandbytes  # noqa: F401 - fail here, with the fix, rather than deep inside from_pretrained
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise ImportError(
            f"--load-{'4' if load_4bit else '8'}bit needs bitsandbytes ({err}); "
            "fix: pip install 'comm-tower[quant]'"
        ) from err
    if load_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=list(keep_float),
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(keep_float))


def is_quantized_module(module: torch.nn.Module) -> bool:
    """Whether `module` is a bitsandbytes 4-bit or 8-bit linear layer."""
    name = type(module).__name__
    return name in ("Linear4bit", "Linear8bitLt")
