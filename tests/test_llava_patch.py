"""`llava_patch` against the real LLaVA 1.2.2: builders resolve COMM names first, CLIP stays LLaVA's.

Runs only in `.venv-llava` (transformers 4.37, `llava-torch`); see docs/llava.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("llava", reason="LLaVA is not installed: run in .venv-llava (docs/llava.md)")

from _llava_helpers import CLIP_NAME, REPO_ROOT, build_tiny_openai_clip, draw, llava_env

import llava_patch
from llava_patch.patch import is_patched, original_of
from llava_patch.run import split_argv

pytestmark = pytest.mark.llava


@pytest.fixture
def patched():
    """Patch for one test, then put LLaVA's builders back."""
    llava_patch.apply()
    yield
    llava_patch.remove()


def tower_args(name: str, **extra: object) -> SimpleNamespace:
    """What LLaVA's `train.py` hands the tower builder (its ModelArguments)."""
    return SimpleNamespace(
        vision_tower=name, mm_vision_select_layer=-2, mm_vision_select_feature="patch", **extra
    )


def test_apply_rebinds_builders_imported_by_name_and_is_idempotent():
    import llava.model.llava_arch as arch
    import llava.model.multimodal_encoder.builder as tower_builder
    import llava.model.multimodal_projector.builder as projector_builder

    llava_tower, llava_projector = arch.build_vision_tower, arch.build_vision_projector
    assert not is_patched(llava_tower)
    flavour = llava_patch.apply()
    first = arch.build_vision_tower
    llava_patch.apply()
    try:
        assert flavour.name == "llava-1.2"
        assert is_patched(arch.build_vision_tower) and is_patched(arch.build_vision_projector)
        assert arch.build_vision_tower is first is tower_builder.build_vision_tower  # no double wrapping
        assert arch.build_vision_projector is projector_builder.build_vision_projector
        assert original_of(arch.build_vision_tower) is llava_tower
        assert original_of(arch.build_vision_projector) is llava_projector
    finally:
        llava_patch.remove()
    assert arch.build_vision_tower is llava_tower and arch.build_vision_projector is llava_projector


def test_preset_file_path_builds_comm_where_llava_would_build_clip(tiny_dir, tmp_path, patched):
    from llava.model.llava_arch import build_vision_tower
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

    from comm_tower import CommVisionTower

    preset = tmp_path / "my-comm.json"
    shutil.copy(REPO_ROOT / "zoo" / "presets" / "tiny-comm.json", preset)
    args = tower_args(str(preset))
    # LLaVA alone: an existing path is taken for a CLIP checkpoint (the trap the patch exists for).
    assert isinstance(original_of(build_vision_tower)(args, delay_load=True), CLIPVisionTower)
    tower = build_vision_tower(args, delay_load=True)
    assert isinstance(tower, CommVisionTower) and not tower.is_loaded
    assert tower.hidden_size == 4 * 64 + 2 * 64  # tiny-comm: 4 CLIP layers + 2 DINOv2 layers of width 64


def test_openai_clip_name_still_goes_to_llavas_clip_tower(tmp_path, monkeypatch, patched):
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
    from transformers import CLIPVisionModel

    folder = build_tiny_openai_clip(tmp_path)
    monkeypatch.chdir(
        tmp_path
    )  # the name is resolved relative to the working directory, as on a real hub cache
    config = LlavaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4
    )
    model = LlavaLlamaForCausalLM(config)
    args = tower_args(
        CLIP_NAME, pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu"
    )
    model.get_model().initialize_vision_modules(model_args=args)  # what LLaVA's train() runs

    tower = model.get_vision_tower()
    assert isinstance(tower, CLIPVisionTower) and tower.is_loaded
    assert isinstance(model.get_model().mm_projector, torch.nn.Sequential)  # LLaVA's own mlp2x_gelu
    assert not hasattr(model.config, "mm_comm")
    pixels = tower.image_processor.preprocess(draw("red", "circle"), return_tensors="pt")["pixel_values"]
    reference = CLIPVisionModel.from_pretrained(folder)(pixels, output_hidden_states=True).hidden_states[-2][
        :, 1:
    ]
    torch.testing.assert_close(tower(pixels), reference)


def test_projector_follows_llava_next_vision_cfg_kwarg(tiny_dir, patched):
    from llava.model.llava_arch import build_vision_projector, build_vision_tower

    from comm_tower.fusion.projector import CommProjector

    tower = build_vision_tower(tower_args("tiny-comm"), delay_load=True)
    # LLaVA-NeXT: build_vision_projector(config, vision_cfg=tower.config), config naming no tower yet.
    config = SimpleNamespace(mm_projector_type="mlp2x_gelu", hidden_size=64, mm_hidden_size=tower.hidden_size)
    projector = build_vision_projector(config, vision_cfg=tower.config)
    assert isinstance(projector, CommProjector)
    assert config.mm_comm["name"] == "tiny-comm"  # written so a saved config alone rebuilds it
    plain = SimpleNamespace(mm_projector_type="linear", hidden_size=64, mm_hidden_size=32)
    assert isinstance(
        build_vision_projector(plain, vision_cfg=SimpleNamespace(hidden_size=32)), torch.nn.Linear
    )


def test_local_rank_from_deepspeed_moves_behind_the_module_name():
    argv = ["--local_rank=1", "llava.train.train", "--vision_tower", "comm"]
    assert split_argv(argv) == ("llava.train.train", ["--vision_tower", "comm", "--local_rank=1"])
    with pytest.raises(SystemExit, match="no module"):
        split_argv(["--local_rank=0"])


CHECK = (
    "import llava.model.llava_arch as m; from llava_patch.patch import is_patched; "
    "print(is_patched(m.build_vision_tower), is_patched(m.build_vision_projector))"
)


def _python(code: str, env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_import_hook_patches_llava_when_it_is_imported(tiny_dir, tmp_path):
    code = "import llava_patch.autopatch as a; a.install(); " + CHECK
    assert _python(code, llava_env(tiny_dir), tmp_path) == "True True"


def test_pth_file_patches_every_interpreter_of_the_environment(tiny_dir, tmp_path):
    from llava_patch.pth import PTH_NAME, install

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    assert install(site_dir) == site_dir / PTH_NAME
    env = llava_env(tiny_dir)
    env.pop("PYTHONPATH")  # the .pth itself must make the repo importable
    start_up = f"import site; site.addsitedir({str(site_dir)!r}); "  # what start-up does for site-packages
    assert _python(start_up + CHECK, env, tmp_path) == "True True"
    env["COMM_LLAVA_PATCH"] = "0"
    assert _python(start_up + CHECK, env, tmp_path) == "False False"


def test_comm_tower_is_built_whole_while_a_zero3_config_is_alive(tiny_dir, patched):
    from llava.model.llava_arch import build_vision_tower
    from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

    from comm_tower.encoders.base import zero3_init_disabled

    ds_config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_batch_size": 1})
    assert is_deepspeed_zero3_enabled()
    with zero3_init_disabled():
        assert not is_deepspeed_zero3_enabled()
    assert is_deepspeed_zero3_enabled()  # restored afterwards
    tower = build_vision_tower(tower_args("tiny-comm"))
    params = list(tower.parameters())
    assert params and all(p.numel() > 0 and not hasattr(p, "ds_id") for p in params)
    del ds_config


def test_comm_projector_trains_under_bf16_autocast_as_with_llavas_bf16_flag(tiny_dir, patched):
    from llava.model.llava_arch import build_vision_projector, build_vision_tower

    tower = build_vision_tower(tower_args("tiny-comm"))
    config = SimpleNamespace(
        mm_vision_tower="tiny-comm",
        mm_projector_type="mlp2x_gelu",
        hidden_size=64,
        mm_hidden_size=tower.hidden_size,
    )
    projector = build_vision_projector(config)
    pixels = tower.image_processor.preprocess(draw("red", "circle"), return_tensors="pt")["pixel_values"]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what HF Trainer does with --bf16 True
        out = projector(tower(pixels))
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in projector.parameters())


def test_hidden_llava_import_error_is_shown_with_its_real_cause(tiny_dir, tmp_path):
    # LLaVA's `llava/model/__init__.py` swallows this; users would see only "cannot import name".
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "import llava_patch\n"
        "try:\n    llava_patch.apply()\nexcept ImportError as err:\n    print(err)\n"
    )
    message = _python(code, llava_env(tiny_dir), tmp_path)
    assert "ModuleNotFoundError: import of PIL halted" in message and "LlavaLlamaForCausalLM" in message


def test_llava_next_is_recognised_by_its_package_layout(tiny_dir, tmp_path):
    fake = tmp_path / "next" / "llava"
    (fake / "model" / "multimodal_resampler").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = llava_env(tiny_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env["PYTHONPATH"]])
    code = "from llava_patch import detect_flavour; print(detect_flavour().name)"
    assert _python(code, env, tmp_path) == "llava-next"
    assert llava_patch.detect_flavour().name == "llava-1.2"  # the installed llava-torch
