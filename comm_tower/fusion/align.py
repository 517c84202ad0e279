"""The alignment MLP that maps a (DINOv2) branch towards the LLM's space after MFM."""

from __future__ import annotations

from torch import nn

from comm_tower.registry import Registry
from comm_tower.spec import AlignSpec

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("silu")(nn.SiLU)


def build_align(spec: AlignSpec, width: int) -> nn.Module:
    """`none` -> identity, `linear` -> one Linear, `mlp` -> `blocks` x (Linear C->rC, act, Linear rC->C)."""
    if spec.kind == "none":
        return nn.Identity()
    if spec.kind == "linear":
        return nn.Linear(width, width)
    act = ACTIVATIONS.get(spec.activation)
    hidden = width * spec.ratio
    layers: list[nn.Module] = []
    for _ in range(spec.blocks):
        layers += [nn.Linear(width, hidden), act(), nn.Linear(hidden, width)]
    return nn.Sequential(*layers)
