"""Fast paths vs the straightforward computation (1e-5, fp32): the one-buffer tower, encoders writing into
slices, and the folded MFM's hand-written backward (input gradient, shared Linear, every layer-scale mode)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from comm_tower.bench.projector import per_layer_loop
from comm_tower.bench.tower import load_hf, per_encoder_pixels, reference_features
from comm_tower.encoders import ENCODERS
from comm_tower.fusion.mfm import LlnLayerScaleFusion
from comm_tower.fusion.projector import CommProjector
from comm_tower.tower import CommVisionTower
from comm_tower.zoo import load_preset, resolve_spec

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _spec(tiny_dir: Path, clip_layers: list[int], dino_layers: list[int]):
    spec = load_preset("tiny-comm")
    spec.encoders[0].layers = clip_layers
    spec.encoders[1].layers = dino_layers
    return resolve_spec(spec)


@pytest.mark.parametrize(
    ("clip_layers", "dino_layers"), [([1, 2, 3, 4], [3, 4]), ([4, 0, 2], [-2]), ([1], [2, 1])]
)
def test_tower_equals_stacked_output_hidden_states(tiny_dir: Path, clip_layers, dino_layers):
    spec = _spec(tiny_dir, clip_layers, dino_layers)
    tower = CommVisionTower("t", spec)
    full = load_hf(spec, torch.float32, torch.device("cpu"), truncate=False)
    pixels = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = reference_features(spec, full, per_encoder_pixels(spec, pixels))
        torch.testing.assert_close(tower(pixels), expected, **TOL)


def test_bare_baseline_is_truncated_at_the_deepest_layer(tiny_dir: Path):
    spec = _spec(tiny_dir, [1, 2], [3])
    clip, dino = load_hf(spec, torch.float32, torch.device("cpu"), truncate=True)
    assert len(getattr(clip, "vision_model", clip).encoder.layers) == 2
    assert len(dino.encoder.layer) == 3


@pytest.mark.parametrize("family", ["clip", "dinov2"])
def test_encoder_writes_into_a_strided_slice(tiny_dir: Path, family: str):
    enc = ENCODERS.get(family).from_pretrained(str(tiny_dir / family), [2, 4, 1])
    pixels = torch.randn(2, 3, 64, 64)
    buffer = torch.full((2, 64, 5 * 64), float("nan"))
    with torch.no_grad():
        fresh = enc(pixels)
        enc(pixels, out=buffer[..., 64 : 4 * 64])
    torch.testing.assert_close(buffer[..., 64 : 4 * 64], fresh, rtol=0, atol=0)
    assert buffer[..., :64].isnan().all() and buffer[..., 4 * 64 :].isnan().all()  # nothing outside the slice
    with pytest.raises(ValueError, match="expected"):
        enc(pixels, out=torch.empty(2, 64, 64))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("mode", ["sum", "softmax", "free"])
def test_folded_mfm_backward_equals_autograd_of_the_per_layer_loop(shared: bool, mode: str):
    torch.manual_seed(0)
    fast = LlnLayerScaleFusion([2, 5, 7], 16, layerscale=mode, shared=shared)
    with torch.no_grad():  # move every parameter off its init so each gradient term matters
        for p in fast.parameters():
            p.add_(0.3 * torch.randn_like(p))
    slow = copy.deepcopy(fast)
    x = torch.randn(2, 9, 3 * 16) * 3 + 1
    xf, xs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    g = torch.randn(2, 9, 16)
    yf, ys = fast(xf), per_layer_loop(slow, xs)
    torch.testing.assert_close(yf, ys, **TOL)
    yf.backward(g)
    ys.backward(g)
    torch.testing.assert_close(xf.grad, xs.grad, **TOL)
    for (name, pf), ps in zip(fast.named_parameters(), slow.parameters()):
        torch.testing.assert_close(pf.grad, ps.grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(("tokens", "width"), [(5, 32), (40, 4)])  # both forward forms: scale tokens / weight
def test_folded_mfm_without_input_gradient_matches_too(tokens: int, width: int):
    torch.manual_seed(1)
    fast = LlnLayerScaleFusion(list(range(6)), width)
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(0.3 * torch.randn_like(p))
    slow = copy.deepcopy(fast)
    x = torch.randn(4, tokens, 6 * width)
    fast(x).square().sum().backward()
    per_layer_loop(slow, x).square().sum().backward()
    for pf, ps in zip(fast.parameters(), slow.parameters()):
        torch.testing.assert_close(pf.grad, ps.grad, **TOL)


def test_projector_normalises_all_branches_at_once_like_each_branch_alone(tiny_dir: Path):
    spec = resolve_spec(load_preset("tiny-comm"))
    fast = CommProjector(spec, "mlp2x_gelu", 16)
    assert fast.shared_norm  # both encoders are 64 wide and use lln_layerscale
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(0.3 * torch.randn_like(p))
    slow = copy.deepcopy(fast)
    x = torch.randn(2, 16, fast.in_width) * 2 + 0.5
    g = torch.randn(2, 16, 16)
    out = fast(x)
    plain = [
        b.align(b.mfm(p)) for b, p in zip(slow.branches, x.split(slow.splits, dim=-1))
    ]  # each on its slice
    expected = slow.head(torch.cat(plain, dim=-1))
    torch.testing.assert_close(out, expected, **TOL)
    out.backward(g)
    expected.backward(g)
    for (name, pf), ps in zip(fast.named_parameters(), slow.parameters()):
        torch.testing.assert_close(pf.grad, ps.grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")
