"""`comm` with the paper's encoder shapes (CLIP ViT-L/14-336, DINOv2 ViT-L/14; random weights, no download)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

import comm_tower as ct

VIT_L = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}


@pytest.fixture(scope="module")
def vit_l_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vit_l")
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(image_size=336, patch_size=14, projection_dim=768, **VIT_L)).to(
        torch.bfloat16
    ).save_pretrained(root / "clip")
    Dinov2Model(Dinov2Config(image_size=518, patch_size=14, **VIT_L)).to(torch.bfloat16).save_pretrained(
        root / "dinov2"
    )
    return {"clip": root / "clip", "dinov2": root / "dinov2"}


# The zoo README's table: preset -> (tokens, tower channels, fused width before the final projection)
ZOO_README = {
    "clip": (576, 1024, 1024),
    "dinov2": (576, 1024, 1024),
    "clip-mfm": (576, 24 * 1024, 1024),
    "dinov2-mfm": (576, 6 * 1024, 1024),
    "comm": (576, 30 * 1024, 2048),
}


@pytest.mark.parametrize("preset", sorted(ZOO_README))
def test_preset_widths_from_configs(vit_l_dirs: dict[str, Path], preset: str):
    spec = ct.load_preset(preset)
    overrides = ",".join(f"{e.name}={vit_l_dirs[e.name]}" for e in spec.encoders)
    cfg = SimpleNamespace(
        mm_vision_tower=f"{preset}:{overrides}", mm_projector_type="linear", hidden_size=4096
    )
    tower = ct.build_vision_tower(cfg, delay_load=True)
    cfg.mm_hidden_size = tower.hidden_size
    proj = ct.build_vision_projector(cfg)
    tokens, channels, fused = ZOO_README[preset]
    assert (tower.num_patches, tower.hidden_size, proj.fused_width) == (tokens, channels, fused)


def test_comm_runs_at_paper_shapes(vit_l_dirs: dict[str, Path]):
    name = f"comm:clip={vit_l_dirs['clip']},dinov2={vit_l_dirs['dinov2']}"
    cfg = SimpleNamespace(mm_vision_tower=name, mm_projector_type="linear", hidden_size=4096)
    tower = ct.build_vision_tower(cfg)
    cfg.mm_hidden_size = tower.hidden_size
    proj = ct.build_vision_projector(cfg)
    assert tower.image_processor.crop_size == {"height": 336, "width": 336}
    assert [len(e.blocks()) for e in tower.encoders] == [24, 24]
    with torch.no_grad():
        feats = tower(torch.randn(1, 3, 336, 336))
        out = proj(feats)
    assert feats.shape == (1, 576, 30720) and out.shape == (1, 576, 4096)
    assert torch.isfinite(out).all()
