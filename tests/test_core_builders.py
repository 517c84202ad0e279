"""LLaVA entry points: names, delay_load, the member contract, save/rebuild from a saved config alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig

import comm_tower as ct
from comm_tower.zoo import preset_dirs


def test_delay_load_reads_configs_only(tiny_dir: Path):
    tower = ct.build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"), delay_load=True)
    assert not tower.is_loaded and len(list(tower.parameters())) == 0
    assert (tower.config.hidden_size, tower.config.image_size, tower.config.patch_size) == (384, 64, 8)
    assert (tower.hidden_size, tower.num_patches, tower.num_patches_per_side) == (384, 64, 8)
    with pytest.raises(RuntimeError, match="load_model"):
        tower(torch.zeros(1, 3, 64, 64))
    tower.load_model()
    tower.load_model()  # idempotent
    assert tower.is_loaded and tower(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 384)


def test_member_contract(tiny_dir: Path):
    tower = ct.build_vision_tower(SimpleNamespace(vision_tower="tiny-comm"))
    x = torch.randn(3, 3, 64, 64)
    batch = tower(x)
    listed = tower([x[0], x[1]])
    assert isinstance(listed, list) and listed[0].shape == (1, 64, 384)
    torch.testing.assert_close(listed[1][0], batch[1], rtol=1e-5, atol=1e-5)
    assert tower(x.double()).dtype == torch.float64
    assert tower.dtype == torch.float32 and tower.device.type == "cpu"
    assert tower.dummy_feature.shape == (1, 384)
    tower.train()
    assert all(not m.training for m in tower.encoders.modules())
    proc = tower.image_processor
    assert proc.crop_size["height"] == 64 and len(proc.image_mean) == 3


def test_names_files_and_overrides(tiny_dir: Path, tmp_path: Path):
    assert ct.is_comm_tower_name("comm") and ct.is_comm_tower_name("tiny-comm")
    assert not ct.is_comm_tower_name("openai/clip-vit-large-patch14-336")
    assert not ct.is_comm_tower_name(None)
    assert {"clip", "dinov2", "clip-mfm", "dinov2-mfm", "comm"} <= set(ct.list_presets())
    copy = tmp_path / "clip-elsewhere"
    shutil.copytree(tiny_dir / "clip", copy)
    spec = ct.spec_for_name(f"tiny-clip-mfm:clip={copy}")
    assert spec.encoders[0].path == str(copy)
    preset = json.loads((preset_dirs()[0] / "tiny-comm.json").read_text())
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(preset))
    assert ct.is_comm_tower_name(str(path))
    assert (
        ct.build_vision_tower(SimpleNamespace(mm_vision_tower=str(path)), delay_load=True).hidden_size == 384
    )


def test_clear_errors(tiny_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="Unknown vision tower 'nope'"):
        ct.build_vision_tower(SimpleNamespace(mm_vision_tower="nope"))
    with pytest.raises(ct.SpecError, match="no encoder named \\['siglip'\\]"):
        ct.spec_for_name("tiny-comm:siglip=/x")
    bad = json.loads((preset_dirs()[0] / "tiny-comm.json").read_text())
    bad["encoders"][1]["fusion_kind"] = "x"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ct.SpecError, match=r"encoders\[1\]: unknown field\(s\) \['fusion_kind'\]"):
        ct.load_preset(str(path))
    bad["encoders"][1].pop("fusion_kind")
    bad["encoders"][1]["layers"] = [3, 9]
    path.write_text(json.dumps(bad))
    with pytest.raises(ct.SpecError, match=r"layers \[9\] out of range for an encoder with 4 blocks"):
        ct.resolve_spec(ct.load_preset(str(path)))
    with pytest.raises(ct.SpecError, match="cannot read a config at '/nowhere'"):
        ct.spec_for_name("tiny-clip:clip=/nowhere")


@pytest.mark.parametrize(
    ("ptype", "keys"),
    [("linear", {"weight", "bias"}), ("mlp2x_gelu", {"0.weight", "2.bias"}), ("identity", set())],
)
def test_plain_llava_projectors_keep_llava_keys(ptype: str, keys: set[str]):
    cfg = SimpleNamespace(mm_vision_tower="openai/clip-vit-large-patch14-336", mm_projector_type=ptype)
    cfg.mm_hidden_size = cfg.hidden_size = 8
    proj = ct.build_vision_projector(cfg)
    assert keys <= set(proj.state_dict())
    with pytest.raises(ValueError, match="unknown mm_projector_type 'mlp2x_relu'"):
        ct.build_vision_projector(
            SimpleNamespace(mm_projector_type="mlp2x_relu", mm_hidden_size=8, hidden_size=8)
        )


def test_token_budget_pooling_and_grid_resampling(tiny_dir: Path, tmp_path: Path):
    preset = json.loads((preset_dirs()[0] / "tiny-comm.json").read_text())
    preset["token_grid"] = 4
    preset["token_resample"] = "area"
    preset["encoders"][1]["image_size"] = 32  # DINOv2 at its own size: a 4x4 grid, CLIP's 8x8 pooled to 4x4
    path = tmp_path / "pooled.json"
    path.write_text(json.dumps(preset))
    pooled = ct.build_vision_tower(SimpleNamespace(mm_vision_tower=str(path)))
    full = ct.build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"))
    x = torch.randn(2, 3, 64, 64)
    out, ref = pooled(x), full(x)
    assert out.shape == (2, 16, 384) and pooled.num_patches == 16 and pooled.num_patches_per_side == 4
    clip = ref[..., :256].transpose(1, 2).reshape(2, 256, 8, 8)
    expected = torch.nn.functional.avg_pool2d(clip, 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out[..., :256], expected, rtol=1e-5, atol=1e-5)
    small = torch.nn.functional.interpolate(x, size=32, mode="bicubic", align_corners=False, antialias=True)
    dino_px = ct.processor.renormalise(small, *pooled._norms[0], *pooled._norms[1])
    torch.testing.assert_close(out[..., 256:], pooled.encoder("dinov2")(dino_px), rtol=1e-5, atol=1e-5)


def test_saved_config_alone_rebuilds_tower_and_projector(tiny_dir: Path, tmp_path: Path):
    preset = json.loads((preset_dirs()[0] / "tiny-comm.json").read_text())
    preset_file = tmp_path / "custom-comm.json"
    preset_file.write_text(json.dumps(preset))
    cfg = LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    cfg.mm_vision_tower, cfg.mm_projector_type = str(preset_file), "mlp2x_gelu"
    tower = ct.build_vision_tower(cfg)
    cfg.mm_hidden_size = tower.hidden_size
    proj = ct.build_vision_projector(cfg)
    with torch.no_grad():
        for p in proj.parameters():
            p.add_(torch.randn_like(p))
    cfg.save_pretrained(tmp_path / "ckpt")
    torch.save(proj.state_dict(), tmp_path / "ckpt" / "mm_projector.bin")
    preset_file.unlink()  # the preset is gone: only the saved config can describe the tower now

    cfg2 = LlamaConfig.from_pretrained(tmp_path / "ckpt")
    tower2 = ct.build_vision_tower(cfg2, delay_load=True)
    tower2.load_model()
    proj2 = ct.build_vision_projector(cfg2)
    proj2.load_state_dict(torch.load(tmp_path / "ckpt" / "mm_projector.bin"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(proj2(tower2(x)), proj(tower(x)), rtol=0, atol=0)


def test_load_structure_from_saved_encoder_configs_then_weights(tiny_dir: Path):
    loaded = ct.build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"))
    empty = ct.build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"), delay_load=True)
    empty.load_structure(json.loads(json.dumps(loaded.encoder_configs())))
    assert empty.is_loaded and not any(p.requires_grad for p in empty.parameters())
    assert empty.state_dict().keys() == loaded.state_dict().keys()
    empty.load_state_dict(loaded.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(empty(x), loaded(x), rtol=0, atol=0)


@pytest.mark.parametrize("device_map", ["auto", "cpu", torch.device("cpu"), {"": "cpu"}])
def test_load_model_accepts_llava_device_maps(tiny_dir: Path, device_map):
    tower = ct.build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"), delay_load=True)
    tower.load_model(device_map=device_map)
    assert tower.device.type == ("cuda" if device_map == "auto" and torch.cuda.is_available() else "cpu")
    assert tower(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 384)


def test_projector_trains_under_bf16_autocast(tiny_dir: Path):
    cfg = SimpleNamespace(mm_vision_tower="tiny-comm", mm_projector_type="mlp2x_gelu", hidden_size=16)
    tower = ct.build_vision_tower(cfg)
    cfg.mm_hidden_size = tower.hidden_size
    proj = ct.build_vision_projector(cfg)
    feats = tower(torch.randn(2, 3, 64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = proj(feats)
    out.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in proj.parameters())
    with torch.no_grad():
        ref = proj(feats)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


def test_saved_spec_follows_moved_encoder_folders(tiny_dir: Path, tmp_path: Path, monkeypatch):
    cfg = SimpleNamespace(mm_vision_tower="tiny-comm", mm_projector_type="linear", hidden_size=8)
    cfg.mm_hidden_size = ct.build_vision_tower(cfg, delay_load=True).hidden_size
    ct.build_vision_projector(cfg)  # writes cfg.mm_comm with today's absolute folders
    moved = tmp_path / "moved-clip"
    shutil.copytree(tiny_dir / "clip", moved)
    monkeypatch.setenv("COMM_ENCODER_PATHS", f"clip={moved}")
    tower = ct.build_vision_tower(cfg, delay_load=True)
    assert tower.spec.encoders[0].path == str(moved) and tower.spec.encoders[1].path == str(
        tiny_dir / "dinov2"
    )
    monkeypatch.setenv("COMM_ENCODER_PATHS", "siglip=/x")
    with pytest.raises(ct.SpecError, match="COMM_ENCODER_PATHS names \\['siglip'\\]"):
        ct.build_vision_tower(cfg, delay_load=True)


def _comm_config_cases(tiny_dir: Path) -> list[tuple[str, SimpleNamespace, object, bool]]:
    saved = ct.spec_for_name("tiny-comm").to_dict()
    clip = "openai/clip-vit-large-patch14-336"
    return [
        ("mm_vision_tower set", SimpleNamespace(mm_vision_tower="tiny-comm"), None, True),
        ("only vision_tower set", SimpleNamespace(vision_tower="tiny-comm"), None, True),
        ("mm_vision_tower None", SimpleNamespace(mm_vision_tower=None, vision_tower="tiny-comm"), None, True),
        ("mm_vision_tower empty", SimpleNamespace(mm_vision_tower="", vision_tower="tiny-comm"), None, True),
        ("mm_comm saved", SimpleNamespace(mm_vision_tower="elsewhere/moved", mm_comm=saved), None, True),
        (
            "vision_cfg comm_spec",
            SimpleNamespace(mm_vision_tower=None),
            SimpleNamespace(comm_spec=saved),
            True,
        ),
        ("a CLIP tower", SimpleNamespace(mm_vision_tower=clip, vision_tower="tiny-comm"), None, False),
        ("no tower", SimpleNamespace(mm_vision_tower=None), SimpleNamespace(comm_spec=None), False),
    ]


def test_core_and_llava_patch_agree_on_comm_configs(tiny_dir: Path):
    from comm_tower.builders import is_comm_config, spec_of
    from llava_patch.patch import wants_comm

    for case, cfg, vision_cfg, expected in _comm_config_cases(tiny_dir):
        assert is_comm_config(cfg, vision_cfg) is expected, case
        assert wants_comm(cfg, vision_cfg=vision_cfg) is expected, case
        spec = spec_of(cfg, vision_cfg)
        assert (spec is not None) is expected, case
        if expected:
            assert spec.name == "tiny-comm" and spec.stacked_width == 384, case


def test_tower_built_inside_a_meta_device_load_has_real_weights_or_refuses(tiny_dir: Path):
    """LLaVA-NeXT builds towers inside the LLM's meta-device `from_pretrained`: never leave meta weights behind.

    transformers 4.x loads the encoders by assignment there (checked against a plain load, and in the LLaVA-NeXT
    env by tests/test_next_llava.py); where a transformers cannot, the build refuses and names delay_load.
    """
    import transformers
    from accelerate import init_empty_weights

    cfg = SimpleNamespace(mm_vision_tower="tiny-comm")
    if int(transformers.__version__.split(".")[0]) >= 5:
        with init_empty_weights(), pytest.raises(RuntimeError, match="delay_load=True"):
            ct.build_vision_tower(cfg)
        return
    with init_empty_weights():
        inside = ct.build_vision_tower(cfg)
    plain = ct.build_vision_tower(cfg).state_dict()
    got = inside.state_dict()
    assert set(got) == set(plain) and not any(v.is_meta for v in got.values())
    for key, value in got.items():
        assert torch.equal(value, plain[key]), key
