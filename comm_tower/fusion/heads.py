"""The final projection types LLaVA knows: `linear`, `mlp{N}x_gelu`, `identity`."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from comm_tower.registry import Registry

# A head family: a name pattern and a builder (in_width, out_width, match) -> module.
HeadBuilder = Callable[[int, int, re.Match[str]], nn.Module]
HEADS: Registry[tuple[re.Pattern[str], HeadBuilder]] = Registry("projector type")


def _head(name: str, pattern: str) -> Callable[[HeadBuilder], HeadBuilder]:
    def wrap(fn: HeadBuilder) -> HeadBuilder:
        HEADS.register(name)((re.compile(pattern), fn))
        return fn

    return wrap


@_head("linear", r"linear")
def _linear(cin: int, cout: int, _: re.Match[str]) -> nn.Module:
    return nn.Linear(cin, cout)


@_head("mlp{N}x_gelu", r"mlp(\d+)x_gelu")
def _mlp(cin: int, cout: int, m: re.Match[str]) -> nn.Module:
    depth = int(m.group(1))
    if depth < 1:
        raise ValueError(f"mm_projector_type '{m.group(0)}': depth must be >= 1")
    layers: list[nn.Module] = [nn.Linear(cin, cout)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(cout, cout)]
    return nn.Sequential(*layers)


@_head("identity", r"identity")
def _identity(cin: int, cout: int, _: re.Match[str]) -> nn.Module:
    if cin != cout:
        raise ValueError(f"mm_projector_type 'identity' needs equal widths, got {cin} -> {cout}")
    return nn.Identity()


def build_head(projector_type: str, in_width: int, out_width: int) -> nn.Module:
    """The LLaVA projection named `projector_type` (keys match LLaVA's `mm_projector.0.weight`...)."""
    for name in HEADS:
        pattern, build = HEADS.get(name)
        match = pattern.fullmatch(projector_type)
        if match:
            return build(in_width, out_width, match)
    raise ValueError(f"unknown mm_projector_type '{projector_type}'; known: {HEADS.names()}")
