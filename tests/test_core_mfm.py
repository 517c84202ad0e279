"""Every MFM variant against its formula written out layer by layer; gradients reach only the projector."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import comm_tower as ct
from comm_tower.fusion.mfm import FUSIONS

L, C, B, N = 4, 8, 2, 9


@pytest.fixture
def z() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(B, N, L * C)


def _layers(x: torch.Tensor) -> list[torch.Tensor]:
    return [x[..., i * C : (i + 1) * C] for i in range(L)]


def _perturb(module: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)


def test_mean(z: torch.Tensor):
    out = FUSIONS.get("mean")([1, 2, 3, 4], C)(z)
    torch.testing.assert_close(out, sum(_layers(z)) / L)


def test_mean_half_takes_the_deeper_blocks_whatever_the_order(z: torch.Tensor):
    out = FUSIONS.get("mean_half")([4, 1, 3, 2], C)(z)  # deeper half = blocks 4 and 3 = positions 0 and 2
    zs = _layers(z)
    torch.testing.assert_close(out, (zs[0] + zs[2]) / 2)


@pytest.mark.parametrize("mode", ["sum", "softmax", "free"])
def test_layerscale(z: torch.Tensor, mode: str):
    m = FUSIONS.get("layerscale")([1, 2, 3, 4], C, layerscale=mode)
    _perturb(m)
    raw = m.scale.weight.detach()
    w = {"sum": raw / raw.sum(), "softmax": raw.softmax(0), "free": raw}[mode]
    expected = sum(w[i] * zi for i, zi in enumerate(_layers(z)))
    torch.testing.assert_close(m(z), expected)


def test_layerscale_starts_equal():
    m = FUSIONS.get("layerscale")([1, 2, 3, 4], C)
    torch.testing.assert_close(m.scale(), torch.full((L,), 1 / L))


@pytest.mark.parametrize("name", ["lln_layerscale", "lln_layerscale_mlp"])
@pytest.mark.parametrize("shared", [False, True])
def test_lln_layerscale_folded_matmul_equals_per_layer_formula(z: torch.Tensor, name: str, shared: bool):
    m = FUSIONS.get(name)([1, 2, 3, 4], C, shared=shared)
    _perturb(m)
    w = m.scale().detach()
    expected = 0
    for i, zi in enumerate(_layers(z)):
        j = 0 if shared else i
        ln = F.layer_norm(zi, (C,), m.norm_weight[j].detach(), m.norm_bias[j].detach(), eps=1e-5)
        lin = ln @ m.weight[j].detach() + m.bias[j].detach()  # weight stored [C_in, C_out]
        expected = expected + w[i] * lin
    torch.testing.assert_close(m(z), expected, rtol=1e-5, atol=1e-5)


def test_lln_layerscale_gradients_equal_the_per_layer_formula(z: torch.Tensor):
    m = FUSIONS.get("lln_layerscale")([1, 2, 3, 4], C)
    _perturb(m)
    m(z).square().sum().backward()
    fast = {n: p.grad.clone() for n, p in m.named_parameters()}
    params = {n: p.detach().clone().requires_grad_(True) for n, p in m.named_parameters()}
    raw = params["scale.weight"]
    w = raw / raw.sum()
    out = 0
    for i, zi in enumerate(_layers(z)):
        ln = F.layer_norm(zi, (C,), params["norm_weight"][i], params["norm_bias"][i], eps=1e-5)
        out = out + w[i] * (ln @ params["weight"][i] + params["bias"][i])
    out.square().sum().backward()
    for n, p in params.items():
        torch.testing.assert_close(fast[n], p.grad, rtol=1e-5, atol=1e-5)


def test_conv_layerscale(z: torch.Tensor):
    m = FUSIONS.get("conv_layerscale")([1, 2, 3, 4], C).eval()  # eval: BN uses its running statistics
    _perturb(m)
    with torch.no_grad():
        m.norm.running_mean.uniform_(-0.5, 0.5)
        m.norm.running_var.uniform_(0.5, 2.0)
    w = m.scale().detach()
    side = 3
    expected = 0
    for i, zi in enumerate(_layers(z)):
        grid = zi.transpose(1, 2).reshape(B, C, side, side)
        sl = slice(i * C, (i + 1) * C)
        conv = F.conv2d(grid, m.conv.weight[sl].detach(), m.conv.bias[sl].detach(), padding=1)
        bn = F.batch_norm(
            conv,
            m.norm.running_mean[sl],
            m.norm.running_var[sl],
            m.norm.weight[sl].detach(),
            m.norm.bias[sl].detach(),
            training=False,
            eps=m.norm.eps,
        )
        expected = expected + w[i] * bn.flatten(2).transpose(1, 2)
    torch.testing.assert_close(m(z), expected, rtol=1e-5, atol=1e-5)


def test_every_registered_variant_is_tested():
    tested = {"mean", "mean_half", "layerscale", "lln_layerscale", "lln_layerscale_mlp", "conv_layerscale"}
    assert set(FUSIONS.names()) == tested


@pytest.mark.parametrize(
    "preset", ["tiny-comm", "tiny-clip-mfm", "tiny-dinov2-mfm", "tiny-clip", "tiny-dinov2"]
)
def test_gradients_reach_projector_never_encoders(tiny_dir: Path, preset: str):
    cfg = SimpleNamespace(mm_vision_tower=preset, mm_projector_type="mlp2x_gelu", hidden_size=16)
    tower = ct.build_vision_tower(cfg)
    cfg.mm_hidden_size = tower.hidden_size
    proj = ct.build_vision_projector(cfg)
    proj(tower(torch.randn(2, 3, 64, 64))).sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in tower.parameters())
    grads = {n: p.grad for n, p in proj.named_parameters()}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values()), grads.keys()
    assert any(
        g.abs().sum() > 0 for n, g in grads.items() if "mfm" in n or preset in ("tiny-clip", "tiny-dinov2")
    )


def test_comm_projector_equals_branchwise_composition(tiny_dir: Path):
    cfg = SimpleNamespace(mm_vision_tower="tiny-comm", mm_projector_type="linear", hidden_size=16)
    tower = ct.build_vision_tower(cfg)
    cfg.mm_hidden_size = tower.hidden_size
    proj = ct.build_vision_projector(cfg)
    feats = tower(torch.randn(2, 3, 64, 64))
    clip, dino = feats[..., : 4 * 64], feats[..., 4 * 64 :]
    b0, b1 = proj.branches
    expected = proj.head(torch.cat([b0.mfm(clip), b1.align(b1.mfm(dino))], dim=-1))
    torch.testing.assert_close(proj(feats), expected)
    assert (
        isinstance(b1.align, torch.nn.Sequential) and len(b1.align) == 6
    )  # 2 blocks x (Linear, GELU, Linear)
    assert b1.align[0].out_features == 4 * 64  # ratio 4
