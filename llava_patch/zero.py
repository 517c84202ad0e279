"""Build the COMM tower whole under an active ZeRO-3 config (LLaVA #1255, #728).

While a Hugging Face DeepSpeed ZeRO-3 config is alive, every `from_pretrained` runs inside
`deepspeed.zero.Init` and comes back as empty shards; the COMM tower's encoders, loaded inside LLaVA's
`initialize_vision_modules`, would then be called with 0-sized weights. Built whole, they are
partitioned by the DeepSpeed engine when it starts, like the rest of the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def without_zero3_init() -> Iterator[None]:
    """Hide transformers' ZeRO-3 config from nested `from_pretrained` calls for the duration."""
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # transformers without the DeepSpeed integration: nothing to hide
        yield
        return
    saved = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    if saved is None:
        yield
        return
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
