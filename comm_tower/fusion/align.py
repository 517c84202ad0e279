"""The alignment MLP that maps a (DINOv2) branch towards the LLM's space after MFM."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from comm_tower.registry import Registry
from comm_tower.spec import AlignSpec

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("silu")(nn.SiLU)

# An alignment kind: (spec, width) -> module.
ALIGNS: Registry[Callable[[AlignSpec, int], nn.Module]] = Registry("alignment kind")


@ALIGNS.register("none")
def _identity(spec: AlignSpec, width: int) -> nn.Module:
    return nn.Identity()


@ALIGNS.register("linear")
def _linear(spec: AlignSpec, width: int) -> nn.Module:
    return nn.Linear(width, width)


@ALIGNS.register("mlp")
def _mlp(spec: AlignSpec, width: int) -> nn.Module:
    act = ACTIVATIONS.get(spec.activation)
    hidden = width * spec.ratio
    layers: list[nn.Module] = []
    for _ in range(spec.blocks):
        layers += [nn.Linear(width, hidden), act(), nn.Linear(hidden, width)]
    return nn.Sequential(*layers)


def build_align(spec: AlignSpec, width: int) -> nn.Module:
    """`none` -> identity, `linear` -> one Linear, `mlp` -> `blocks` x (Linear C->rC, act, Linear rC->C)."""
    return ALIGNS.get(spec.kind)(spec, width)
