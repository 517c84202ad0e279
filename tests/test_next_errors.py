"""Bad input for a COMM tower inside LLaVA-NeXT: merge types we cannot serve, token grids anyres cannot view.

Runs only in `.venv-llava-next` (scripts/test_llava_next.sh).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip(
    "llava.model.multimodal_resampler", reason="LLaVA-NeXT is not installed: .venv-llava-next"
)

from _next_helpers import build_tiny_next_tower

import llava_patch


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_next_tower(tmp_path_factory.mktemp("next-tower"))


@pytest.fixture()
def build():
    """NeXT's own (patched) `build_vision_tower`, called as `initialize_vision_modules` calls it."""
    llava_patch.apply()
    from llava.model.multimodal_encoder import builder

    yield lambda tower, merge: builder.build_vision_tower(
        SimpleNamespace(vision_tower=str(tower), mm_vision_select_layer=-2, mm_patch_merge_type=merge)
    )
    llava_patch.remove()


def _variant(preset: Path, name: str, **fields) -> Path:
    data = json.loads(preset.read_text()) | fields | {"name": name}
    path = preset.with_name(f"{name}.json")
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("merge", ["flat", "spatial", "spatial_unpad", "spatial_maxpool2x2"])
def test_merge_types_we_serve_build(build, preset, merge):
    tower = build(preset, merge)
    assert tower.num_patches_per_side == 8 and tower.num_patches == 64


@pytest.mark.parametrize("merge", ["unires", "spatial_unpadd"])  # NeXT's dpo.sh flag, and a typo NeXT accepts
def test_unknown_merge_type_names_the_flag_and_the_fix(build, preset, merge):
    with pytest.raises(
        ValueError, match=rf"--mm_patch_merge_type {merge}: .*use --mm_patch_merge_type spatial_unpad"
    ):
        build(preset, merge)


def test_odd_grid_with_maxpool_names_the_flag_and_the_fix(build, preset):
    odd = _variant(preset, "tiny-next-odd", token_grid=7)
    assert build(odd, "spatial_unpad").num_patches_per_side == 7  # anyres views any square grid
    with pytest.raises(
        ValueError, match=r"--mm_patch_merge_type spatial_maxpool2x2 .*token_grid. to an even number"
    ):
        build(odd, "spatial_maxpool2x2")


def test_non_square_token_grid_is_refused_naming_the_preset_field(build, preset):
    """NeXT views each crop's tokens as `num_patches_per_side` squared; a preset cannot ask for anything else."""
    flat = _variant(preset, "tiny-next-rect", token_grid=[8, 6])
    with pytest.raises(ValueError, match=r"tiny-next-rect.*token_grid"):
        build(flat, "spatial_unpad")


def test_initialize_vision_modules_stops_before_training(preset, tmp_path):
    """The error comes from NeXT's own `initialize_vision_modules`, before any data is read."""
    from _llava_helpers import build_tiny_llama
    from llava.model import LlavaLlamaForCausalLM

    model = LlavaLlamaForCausalLM.from_pretrained(build_tiny_llama(tmp_path / "llm"))
    args = SimpleNamespace(
        vision_tower=str(preset),
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        pretrain_mm_mlp_adapter=None,
        mm_patch_merge_type="unires",
        mm_projector_type="mlp2x_gelu",
        add_faster_video=False,
    )
    llava_patch.apply()
    try:
        with pytest.raises(ValueError, match="--mm_patch_merge_type unires"):
            model.get_model().initialize_vision_modules(model_args=args)
    finally:
        llava_patch.remove()
