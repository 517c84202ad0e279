"""The COMM projector: per-branch MFM -> alignment MLP -> branch fusion -> LLaVA projection.

All trainable fusion lives here, because LLaVA trains and saves only `mm_projector` in stage 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from comm_tower.fusion.align import build_align
from comm_tower.fusion.heads import build_head
from comm_tower.fusion.mfm import FUSIONS, needs_align_mlp, unit_layer_norm
from comm_tower.registry import Registry
from comm_tower.spec import CommSpec, EncoderSpec

# A branch fusion: (branch widths -> fused width, branch outputs -> fused output).
BranchFusion = tuple[Callable[[list[int]], int], Callable[[list[torch.Tensor]], torch.Tensor]]
BRANCH_FUSIONS: Registry[BranchFusion] = Registry("branch fusion")


def _equal_width(widths: list[int]) -> int:
    if len(set(widths)) != 1:
        raise ValueError(f"branch_fusion 'sum' needs equal branch widths, got {widths}; use 'concat'")
    return widths[0]


BRANCH_FUSIONS.register("concat")((sum, lambda parts: torch.cat(parts, dim=-1)))
BRANCH_FUSIONS.register("sum")((_equal_width, lambda parts: torch.stack(parts).sum(0)))


class Branch(nn.Module):
    """One encoder's MFM and alignment (the projector calls both parts itself)."""

    def __init__(self, enc: EncoderSpec, spec: CommSpec) -> None:
        super().__init__()
        if enc.layer_indices is None or enc.width is None:
            raise ValueError(
                f"encoder '{enc.name}' is not resolved; build the projector from a resolved spec"
            )
        fusion = FUSIONS.get(enc.fusion)
        options = {"layerscale": spec.layerscale, "shared": spec.lln_shared}
        self.mfm = fusion(enc.layer_indices, enc.width, **{k: options[k] for k in fusion.spec_options})
        align = enc.align
        if needs_align_mlp(enc.fusion) and align.kind == "none":
            align = dataclasses.replace(align, kind="mlp")
        self.align = build_align(align, self.mfm.out_width)
        self.in_width = len(enc.layer_indices) * enc.width
        self.out_width = self.mfm.out_width


class CommProjector(nn.Module):
    """Splits the tower's stacked channels per encoder, merges each, fuses branches, projects."""

    def __init__(self, spec: CommSpec, projector_type: str, llm_width: int) -> None:
        super().__init__()
        self.spec = spec
        self.branches = nn.ModuleList(Branch(e, spec) for e in spec.encoders)
        self.splits = [b.in_width for b in self.branches]
        fused_width, _ = BRANCH_FUSIONS.get(spec.branch_fusion)
        self.fused_width = fused_width([b.out_width for b in self.branches])
        self.head = build_head(projector_type, self.fused_width, llm_width)
        mfms = [b.mfm for b in self.branches]
        # One layer norm over the whole input when every branch starts with one of the same shape: it
        # reads the tower's contiguous output once instead of copying each branch's strided slice. The
        # branches are still called as modules (ZeRO-3 gathers their parameters in forward hooks).
        self.shared_norm = (
            all(m.normalises_input for m in mfms) and len({(m.width, m.eps) for m in mfms}) == 1
        )

    @property
    def in_width(self) -> int:
        """Channels expected from the tower."""
        return sum(self.splits)

    def merge(self, x: torch.Tensor) -> list[torch.Tensor]:
        """MFM of every branch: tower features `[B, N, stacked]` -> one `[B, N, C_i]` per encoder."""
        if x.shape[-1] != self.in_width:
            raise ValueError(
                f"projector expects {self.in_width} channels from the tower ({self.spec.name}), got {x.shape[-1]}"
            )
        dtype = next((p.dtype for p in self.parameters()), x.dtype)
        x = x.to(dtype)
        if self.shared_norm:
            first = self.branches[0].mfm
            z = unit_layer_norm(x, first.width, first.eps)
            return [b.mfm(p, normalised=True) for b, p in zip(self.branches, z.split(self.splits, dim=-1))]
        return [b.mfm(p) for b, p in zip(self.branches, x.split(self.splits, dim=-1))]

    def fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Tower features -> fused visual features before the final projection."""
        _, combine = BRANCH_FUSIONS.get(self.spec.branch_fusion)
        return combine([b.align(m) for b, m in zip(self.branches, self.merge(x))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, N, stacked]` -> `[B, N, llm_width]`."""
        return self.head(self.fuse(x))
