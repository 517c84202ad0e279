"""Multi-level feature merging (MFM): every variant of the paper's table, registered by name.

Input of every variant: `[B, N, L*C]`, the L selected layers of one encoder stacked on channels (the
tower's output layout). Output: `[B, N, C_out]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from comm_tower.registry import Registry

FUSIONS: Registry[type[MultiLevelFusion]] = Registry("MFM fusion")

# A layerscale mode: (initial raw weight for L layers, raw weights -> the w_1..w_L of the sum); all start equal.
LayerScaleMode = tuple[Callable[[int], float], Callable[[torch.Tensor], torch.Tensor]]
LAYERSCALES: Registry[LayerScaleMode] = Registry("layerscale mode")
LAYERSCALES.register("sum")((lambda n: 1.0 / n, lambda w: w / w.sum()))
LAYERSCALES.register("softmax")((lambda n: 0.0, lambda w: w.softmax(0)))
LAYERSCALES.register("free")((lambda n: 1.0 / n, lambda w: w))


class MultiLevelFusion(nn.Module):
    """Base: knows the layer count L, width C, and which block each layer came from.

    Variants that start by layer-normalising every layer (`normalises_input`) also accept
    `forward(z, normalised=True)`, so a projector can normalise all branches' layers in one pass over its
    contiguous input instead of one strided copy per branch (through `__call__`, so ZeRO-3's parameter
    gathering hooks still run). `spec_options` names the tower-wide spec options (`layerscale`, `shared`)
    a variant's constructor takes; the projector passes those alone.
    """

    normalises_input: ClassVar[bool] = False
    spec_options: ClassVar[tuple[str, ...]] = ()
    eps: float = 1e-5

    def __init__(self, layer_indices: Sequence[int], width: int) -> None:
        super().__init__()
        self.layer_indices = list(layer_indices)
        self.num_layers = len(self.layer_indices)
        self.width = width
        self.out_width = width

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, N, L*C]` -> `[B, N, L, C]` (a view)."""
        return x.unflatten(-1, (self.num_layers, self.width))


def unit_layer_norm(x: torch.Tensor, width: int, eps: float) -> torch.Tensor:
    """Every `width`-channel chunk of `[..., k*width]` normalised to zero mean, unit variance (no affine)."""
    return F.layer_norm(x.unflatten(-1, (-1, width)), (width,), eps=eps).flatten(-2)


class LayerScale(nn.Module):
    """Learnable per-layer weights starting equal (1/L); `sum` renormalises, `softmax` uses logits."""

    def __init__(self, num_layers: int, mode: str = "sum") -> None:
        super().__init__()
        self.mode = mode
        init, _ = LAYERSCALES.get(mode)
        self.weight = nn.Parameter(torch.full((num_layers,), init(num_layers)))

    def forward(self) -> torch.Tensor:
        """The weights w_1..w_L used in the sum."""
        _, weights = LAYERSCALES.get(self.mode)
        return weights(self.weight)


@FUSIONS.register("mean")
class MeanFusion(MultiLevelFusion):
    """Mean of all selected layers (no parameters; identity for one layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average over layers."""
        return self.split(x).mean(dim=-2)


@FUSIONS.register("mean_half")
class MeanHalfFusion(MultiLevelFusion):
    """Mean of the deeper half of the selected layers (by block index; at least one layer)."""

    def __init__(self, layer_indices: Sequence[int], width: int) -> None:
        super().__init__(layer_indices, width)
        order = sorted(range(self.num_layers), key=lambda i: self.layer_indices[i])
        keep = order[len(order) - max(1, len(order) // 2) :]
        self.register_buffer("keep", torch.tensor(sorted(keep)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average over the deeper half."""
        return self.split(x).index_select(-2, self.keep).mean(dim=-2)


@FUSIONS.register("layerscale")
class LayerScaleFusion(MultiLevelFusion):
    """sum_i w_i z_i with learnable w normalised to sum to 1."""

    spec_options = ("layerscale",)

    def __init__(self, layer_indices: Sequence[int], width: int, layerscale: str = "sum") -> None:
        super().__init__(layer_indices, width)
        self.scale = LayerScale(self.num_layers, layerscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weighted sum over layers as one matrix-vector product."""
        return torch.einsum("bnlc,l->bnc", self.split(x), self.scale().to(x.dtype))


@FUSIONS.register("lln_layerscale")
class LlnLayerScaleFusion(MultiLevelFusion):
    """sum_i w_i Linear_i(LN_i(z_i)), the paper's choice.

    Computed as ONE matmul: with z^_i the unit-normalised layer, Linear_i(LN_i(z_i)) = z^_i (g_i * W_i) +
    (b_i + beta_i W_i), so all layers fold into a `[L*C, C_out]` weight and a bias. Autograd then needs only
    the weight gradient of that matmul (the frozen encoders' tokens need no gradient).
    """

    normalises_input = True
    spec_options = ("layerscale", "shared")

    def __init__(
        self, layer_indices: Sequence[int], width: int, layerscale: str = "sum", shared: bool = False
    ) -> None:
        super().__init__(layer_indices, width)
        n = 1 if shared else self.num_layers
        bound = 1.0 / math.sqrt(width)  # nn.Linear's default init
        self.norm_weight = nn.Parameter(torch.ones(n, width))
        self.norm_bias = nn.Parameter(torch.zeros(n, width))
        self.weight = nn.Parameter(torch.empty(n, width, width).uniform_(-bound, bound))  # [L, C_in, C_out]
        self.bias = nn.Parameter(torch.empty(n, width).uniform_(-bound, bound))
        self.scale = LayerScale(self.num_layers, layerscale)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The `[L*C, C_out]` weight and `[C_out]` bias equal to the per-layer LN affine + Linear + scale."""
        weight, scale, shift, bias = self.fold_factors()
        return weight * scale[:, None], torch.addmv(bias, weight.t(), shift)

    def fold_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`W [L*C, C_out]`, `s = w*g`, `t = w*beta` (both `[L*C]`), `sum_i w_i b_i`: folded W = s * W."""
        L, C = self.num_layers, self.width
        w = self.scale()
        weight = self.weight.expand(L, C, C).reshape(L * C, C)  # a view unless the Linear is shared
        scale = (w[:, None] * self.norm_weight.expand(L, C)).reshape(L * C)
        shift = (w[:, None] * self.norm_bias.expand(L, C)).reshape(L * C)
        bias = (w[:, None] * self.bias.expand(L, C)).sum(0)
        return weight, scale, shift, bias

    def forward(self, x: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """Normalise each layer (unless `x` already is `unit_layer_norm`'s output, which may be a strided
        slice), then one `[B*N, L*C] x [L*C, C]` matmul."""
        z = x if normalised else unit_layer_norm(x, self.width, self.eps)
        weight, scale, shift, bias = (t.to(z.dtype) for t in self.fold_factors())
        out = _FoldedMatmul.apply(z.flatten(0, -2), weight, scale, shift, bias)
        return out.unflatten(0, z.shape[:-1])


class _FoldedMatmul(torch.autograd.Function):
    """`z @ (s[:, None] * W) + (b + t @ W)` with a backward that touches `[L*C, C_out]` tensors only twice.

    Autograd of the same expression allocates several `[L*C, C_out]` temporaries (the scaled weight's
    gradient, the product for `s`'s gradient, the bias outer product); here the weight gradient is the
    one matmul `z^T g`, scaled and rank-1 updated in place. (Doing those passes block by block in cache
    is a few percent faster on an idle CPU but several times slower when another process competes for
    a core, because every small multi-threaded op waits on a descheduled thread.) The forward
    applies `s` and `t` to whichever is smaller: the `[M, L*C]` tokens (`(z*s + t) @ W`, no bias
    matrix-vector product) or the weight.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        z: torch.Tensor,
        weight: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        bias: torch.Tensor,
    ) -> torch.Tensor:
        """`[M, K] x [K, O]` with the folded weight and bias."""
        ctx.save_for_backward(z, weight, scale, shift)
        if z.shape[0] < 2 * weight.shape[1]:  # few tokens: scale them rather than the weight
            return torch.addmm(bias, torch.addcmul(shift, z, scale), weight)
        return torch.addmm(torch.addmv(bias, weight.t(), shift), z, weight * scale[:, None])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        """Gradients of z, W, s, t and b from the one weight-gradient matmul."""
        z, weight, scale, shift = ctx.saved_tensors
        grad = grad.to(weight.dtype)  # under autocast the forward ran in bf16/fp16; the backward does not
        need_z, need_w, need_s, need_t, need_b = ctx.needs_input_grad
        grad_b = grad.sum(0)
        grad_z = grad @ (weight * scale[:, None]).t() if need_z else None
        grad_w = grad_s = grad_t = None
        if need_w or need_s:
            g_folded = z.t() @ grad  # [K, O]: the gradient of the folded weight
            if need_s:
                grad_s = torch.linalg.vecdot(g_folded, weight, dim=1)
            if need_w:
                grad_w = g_folded.mul_(scale[:, None]).addr_(shift, grad_b)
        if need_t:
            grad_t = weight @ grad_b
        return grad_z, grad_w, grad_s, grad_t, grad_b if need_b else None


@FUSIONS.register("conv_layerscale")
class ConvLayerScaleFusion(MultiLevelFusion):
    """sum_i w_i BN_i(Conv_i(z_i)) on the token grid: one grouped 3x3 conv over all layers."""

    spec_options = ("layerscale",)

    def __init__(
        self, layer_indices: Sequence[int], width: int, layerscale: str = "sum", kernel_size: int = 3
    ) -> None:
        super().__init__(layer_indices, width)
        lc = self.num_layers * width
        self.conv = nn.Conv2d(lc, lc, kernel_size, padding=kernel_size // 2, groups=self.num_layers)
        self.norm = nn.BatchNorm2d(lc)
        self.scale = LayerScale(self.num_layers, layerscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens -> grid -> per-layer conv + BN -> weighted sum -> tokens."""
        b, n, lc = x.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"conv_layerscale needs a square token grid, got {n} tokens")
        grid = x.transpose(1, 2).reshape(b, lc, side, side)
        y = self.norm(self.conv(grid)).reshape(b, self.num_layers, self.width, n)
        return torch.einsum("blcn,l->bnc", y, self.scale().to(y.dtype))


# `lln_layerscale` followed by the alignment MLP (the projector adds the MLP: see `needs_align_mlp`).
FUSIONS.register("lln_layerscale_mlp")(LlnLayerScaleFusion)


def needs_align_mlp(fusion: str) -> bool:
    """True for variants whose definition includes the alignment MLP."""
    return fusion == "lln_layerscale_mlp"
