"""DeepSpeed ZeRO-3 helpers: read and write parameters that may be sharded (LLaVA #1255, #728)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def is_sharded(param: torch.Tensor) -> bool:
    """Whether `param` is a ZeRO-3 partitioned parameter."""
    return hasattr(param, "ds_id")


@contextlib.contextmanager
def gathered(params: list[torch.Tensor], modifier_rank: int | None = None) -> Iterator[None]:
    """Full tensors inside the block for ZeRO-3 shards (a collective: every rank must enter); no-op otherwise."""
    sharded = [p for p in params if is_sharded(p)]
    if not sharded:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(sharded, modifier_rank=modifier_rank):
        yield


def load_state_dict_gathered(module: nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """`module.load_state_dict(state_dict, strict=True)`, gathering ZeRO-3 shards so no weight is lost."""
    own = dict(module.named_parameters())
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own) - {n for n, _ in module.named_buffers()})
    if missing or unexpected:
        raise ValueError(
            f"{where}: keys do not match the projector; missing {missing[:5]}, unexpected {unexpected[:5]} "
            "(was it written for another --mm_projector_type or --vision_tower?)"
        )
    with gathered(list(module.parameters()), modifier_rank=0), torch.no_grad():
        for name, tensor in state_dict.items():
            target = own.get(name)
            if target is None:
                continue
            if tuple(target.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{where}: '{name}' has shape {tuple(tensor.shape)}, model has {tuple(target.shape)}"
                )
            target.copy_(tensor.to(dtype=target.dtype, device=target.device))


def gathered_state_dict(module: nn.Module, prefix: str, keep: str) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters whose full name (with `prefix`) contains `keep`, ZeRO-3 shards gathered."""
    named = [(prefix + n, p) for n, p in module.named_parameters() if keep in prefix + n]
    with gathered([p for _, p in named]):
        return {n: p.detach().cpu().clone() for n, p in named}
