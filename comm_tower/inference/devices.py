"""Device and float dtype for inference, from the CLI flags: a device that is not there is a clear error."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

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
