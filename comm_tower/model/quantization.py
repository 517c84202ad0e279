"""4-bit and 8-bit loading: the bitsandbytes config, which layers it must leave alone (all but the LLM's), and
the checkpoint's tensors read one at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import transformers

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


# transformers 5 reads each tensor of a given state dict with `t[...]` just before converting it; 4.x reads eagerly
READS_ON_DEMAND = int(transformers.__version__.split(".")[0]) >= 5
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_FILE = "model.safetensors"


class TensorOnDisk:
    """One tensor of a safetensors file, read only when transformers materialises it (`t[...]`), the file closed
    again right after.

    transformers maps every shard of a checkpoint at once and unmaps them after the last weight: each page it
    read stays resident until the end, so loading 4-bit from fp16 held the whole checkpoint's pages (0.4 GiB per
    7B layer) on top of the 4-bit weights (0.1 GiB per layer). Read this way, only the tensor being quantised is
    mapped.
    """

    def __init__(self, file: str, name: str) -> None:
        self.file, self.name = file, name

    def __getitem__(self, index: Any) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(self.file, framework="pt") as f:
            return f.get_slice(self.name)[index]


def safetensors_state_dict(folder: str) -> dict[str, TensorOnDisk] | None:
    """Every weight of the safetensors checkpoint in `folder` (one file or index + shards), unread; None when the
    folder holds no safetensors checkpoint."""
    from safetensors import safe_open

    if not READS_ON_DEMAND:
        return None
    root = Path(folder)
    index = root / SAFETENSORS_INDEX
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / SAFETENSORS_FILE).is_file():
        files = [SAFETENSORS_FILE]
    else:
        return None
    out = {}
    for name in files:
        with safe_open(str(root / name), framework="pt") as f:
            out.update({key: TensorOnDisk(str(root / name), key) for key in f.keys()})  # noqa: SIM118 - safe_open is not iterable
    return out
