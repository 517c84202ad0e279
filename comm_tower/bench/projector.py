"""COMM projector forward+backward vs one dense linear layer with the same multiply-adds."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from comm_tower.bench.report import Row, image_row
from comm_tower.bench.timing import interleaved, peak_memory_mib
from comm_tower.fusion.mfm import LlnLayerScaleFusion
from comm_tower.fusion.projector import CommProjector
from comm_tower.spec import CommSpec


def per_layer_loop(mfm: LlnLayerScaleFusion, x: torch.Tensor) -> torch.Tensor:
    """The paper's formula written plainly: sum_i w_i Linear_i(LN_i(z_i)), one small matmul per layer."""
    w = mfm.scale()
    shared = mfm.weight.shape[0] == 1
    out = None
    for i, z in enumerate(mfm.split(x).unbind(-2)):
        j = 0 if shared else i
        y = F.layer_norm(z, (mfm.width,), mfm.norm_weight[j], mfm.norm_bias[j], mfm.eps)
        y = w[i] * (y @ mfm.weight[j] + mfm.bias[j])
        out = y if out is None else out + y
    assert out is not None
    return out


def _step(params: list[nn.Parameter], outputs: Callable[[], list[torch.Tensor]]) -> None:
    for p in params:
        p.grad = None
    ys = outputs()
    torch.autograd.backward(ys, [torch.ones_like(y) for y in ys])


def run(
    spec: CommSpec,
    size: str,
    batch: int,
    repeats: int,
    llm_width: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Row]:
    """Time MFM (every branch, as the projector runs it), the per-layer loop, the projector, the dense linear."""
    device = device or torch.device("cpu")
    torch.manual_seed(0)
    projector = CommProjector(spec, "mlp2x_gelu", llm_width).to(device=device, dtype=dtype)
    mfms = [b.mfm for b in projector.branches]
    if not all(isinstance(m, LlnLayerScaleFusion) for m in mfms):
        raise ValueError(f"preset '{spec.name}': the projector benchmark expects lln_layerscale fusion")
    tokens = batch * spec.num_tokens
    x = torch.randn(batch, spec.num_tokens, projector.in_width, device=device, dtype=dtype)
    parts = x.split(projector.splits, dim=-1)
    width = mfms[0].width
    dense = nn.Linear(projector.in_width, width).to(device=device, dtype=dtype)
    mfm_params = [p for m in mfms for p in m.parameters()]
    fns: dict[str, Callable[[], object]] = {
        "comm_mfm": lambda: _step(mfm_params, lambda: projector.merge(x)),
        "dense_linear_equal_macs": lambda: _step(list(dense.parameters()), lambda: [dense(x)]),
        "mfm_per_layer_loop": lambda: _step(
            mfm_params, lambda: [per_layer_loop(m, p) for m, p in zip(mfms, parts)]
        ),
        "comm_projector_full": lambda: _step(list(projector.parameters()), lambda: [projector(x)]),
    }
    times = interleaved(fns, repeats, device=device)
    peaks = {name: peak_memory_mib(fn, device) for name, fn in fns.items()}
    mfm_macs = tokens * sum(m.num_layers * m.width * m.out_width for m in mfms)
    full_macs = tokens * sum(
        mod.in_features * mod.out_features for mod in projector.modules() if isinstance(mod, nn.Linear)
    ) + sum(tokens * m.num_layers * m.width * m.out_width for m in mfms)
    base = times["dense_linear_equal_macs"]
    rows = []
    for name, t in times.items():
        comparable = name in ("comm_mfm", "mfm_per_layer_loop")
        macs = full_macs if name == "comm_projector_full" else mfm_macs
        extra = {
            "forward_gmac": macs / 1e9,
            "dense_shape": f"[{tokens}, {projector.in_width}] x [{projector.in_width}, {width}]",
            "mfm_share_of_projector": (
                times["comm_mfm"].median / t.median if name == "comm_projector_full" else None
            ),
        }
        rows.append(
            image_row("projector_fwd_bwd", size, batch, t, peaks[name], base if comparable else None, extra)
        )
    return rows
