"""Encoders return exactly Hugging Face's `output_hidden_states` layers and run no block past the deepest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from comm_tower.encoders import ENCODERS

CASES = [
    ("clip", "clip", 1),
    ("dinov2", "dinov2", 1),
    ("siglip", "siglip", 0),
]


def _reference(model_cls, path: Path, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    model = model_cls.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True).hidden_states


@pytest.mark.parametrize(("family", "folder", "prefix"), CASES)
@pytest.mark.parametrize("layers", [[0, 2, -1], [-2], [3, 1]])
def test_layers_equal_hf_hidden_states(
    tiny_dir: Path, family: str, folder: str, prefix: int, layers: list[int]
):
    cls = ENCODERS.get(family)
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64)
    ref = _reference(cls.model_class, tiny_dir / folder, pixels)
    enc = cls.from_pretrained(str(tiny_dir / folder), layers, attn_implementation="eager")
    with torch.no_grad():
        out = enc(pixels)
    width = enc.width
    assert out.shape == (2, ref[0].shape[1] - prefix, len(layers) * width)
    for i, k in enumerate(layers):
        expected = ref[k][:, prefix:]
        torch.testing.assert_close(out[..., i * width : (i + 1) * width], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("family", "folder", "prefix"), CASES)
def test_sdpa_path_matches_eager(tiny_dir: Path, family: str, folder: str, prefix: int):
    cls = ENCODERS.get(family)
    pixels = torch.randn(2, 3, 64, 64)
    fast = cls.from_pretrained(str(tiny_dir / folder), [1, 4], attn_implementation="sdpa")
    slow = cls.from_pretrained(str(tiny_dir / folder), [1, 4], attn_implementation="eager")
    with torch.no_grad():
        torch.testing.assert_close(fast(pixels), slow(pixels), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("family", "folder", "prefix"), CASES)
@pytest.mark.parametrize("deepest", [1, 2, 3])
def test_layer_k_runs_k_blocks(tiny_dir: Path, family: str, folder: str, prefix: int, deepest: int):
    cls = ENCODERS.get(family)
    enc = cls.from_pretrained(str(tiny_dir / folder), [deepest, 1] if deepest > 1 else [1])
    calls: list[int] = []
    for i, block in enumerate(enc.blocks()):
        block.register_forward_hook(lambda *_, i=i: calls.append(i))
    with torch.no_grad():
        enc(torch.randn(1, 3, 64, 64))
    assert calls == list(range(deepest))
    assert len(enc.blocks()) == deepest  # the unused blocks are not even kept in memory


def test_negative_index_resolves_like_hf_and_bad_index_is_named(tiny_dir: Path):
    cls = ENCODERS.get("clip")
    enc = cls.from_pretrained(str(tiny_dir / "clip"), [-2])
    assert enc.layer_indices == [3]
    with pytest.raises(
        ValueError, match=r"clip encoder: layers \[9\] out of range for an encoder with 4 blocks"
    ):
        cls.from_pretrained(str(tiny_dir / "clip"), [9])


def test_registers_family_drops_register_tokens(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "Dinov2WithRegistersModel"):
        pytest.skip("this transformers release has no Dinov2WithRegistersModel (added in 4.48)")
    cfg = transformers.Dinov2WithRegistersConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=64,
        num_register_tokens=4,
    )
    torch.manual_seed(0)
    transformers.Dinov2WithRegistersModel(cfg).save_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 64, 64)
    ref = _reference(transformers.Dinov2WithRegistersModel, tmp_path, pixels)
    enc = ENCODERS.get("dinov2_registers").from_pretrained(str(tmp_path), [2], attn_implementation="eager")
    with torch.no_grad():
        out = enc(pixels)
    assert out.shape[1] == 64
    torch.testing.assert_close(out, ref[2][:, 5:], rtol=1e-5, atol=1e-5)
