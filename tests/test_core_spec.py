"""Bad presets fail at load with a SpecError naming the file, the field, the value and what is allowed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import comm_tower as ct
from comm_tower.encoders import ATTN_IMPLEMENTATIONS, ENCODERS
from comm_tower.fusion.align import ACTIVATIONS
from comm_tower.fusion.mfm import FUSIONS, LAYERSCALES, MeanFusion
from comm_tower.fusion.projector import BRANCH_FUSIONS
from comm_tower.spec import SpecError, resolve_layer_indices
from comm_tower.tower import TOKEN_RESAMPLERS
from comm_tower.zoo import load_preset, preset_dirs, spec_for_name

REPO_PRESETS = Path(__file__).resolve().parents[1] / "zoo" / "presets"
Edit = Callable[[dict[str, Any]], None]


def _tiny_comm() -> dict[str, Any]:
    return json.loads((preset_dirs()[0] / "tiny-comm.json").read_text())


def _set(*keys: Any, value: Any) -> Edit:
    """An edit that sets `preset[k0][k1]... = value`."""

    def edit(preset: dict[str, Any]) -> None:
        target = preset
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return edit


def _write(tmp_path: Path, edit: Edit) -> Path:
    preset = _tiny_comm()
    edit(preset)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(preset))
    return path


def _message(tmp_path: Path, edit: Edit) -> tuple[str, Path]:
    path = _write(tmp_path, edit)
    with pytest.raises(SpecError) as err:
        load_preset(str(path))
    return str(err.value), path


def _shared_with_mean_fusions(preset: dict[str, Any]) -> None:
    preset["lln_shared"] = True
    for enc in preset["encoders"]:
        enc["fusion"] = "mean"


INT_LIST = "a non-empty list of integers"
RGB = "a list of 3 numbers"
POSITIVE = "a positive integer"
GRID = "a positive integer or null"

# (case, edit, field named in the error, what the error must say is allowed)
CASES: list[tuple[str, Edit, str, list[str]]] = [
    (
        "fusion typo",
        _set("encoders", 0, "fusion", value="lln_layrscale"),
        "encoders[0].fusion",
        FUSIONS.names(),
    ),
    ("family typo", _set("encoders", 0, "family", value="clipp"), "encoders[0].family", ENCODERS.names()),
    (
        "layers as a range string",
        _set("encoders", 0, "layers", value="1-24"),
        "encoders[0].layers",
        [INT_LIST],
    ),
    ("fractional layer", _set("encoders", 0, "layers", value=[1.5]), "encoders[0].layers", [INT_LIST]),
    ("bool layer", _set("encoders", 0, "layers", value=[True, 2]), "encoders[0].layers", [INT_LIST]),
    ("empty layers", _set("encoders", 0, "layers", value=[]), "encoders[0].layers", [INT_LIST]),
    (
        "repeated layer",
        _set("encoders", 1, "layers", value=[3, 3]),
        "encoders[1].layers",
        ["without duplicates"],
    ),
    (
        "activation typo",
        _set("encoders", 1, "align", "activation", value="gleu"),
        "encoders[1].align.activation",
        ACTIVATIONS.names(),
    ),
    ("align as a string", _set("encoders", 1, "align", value="mlp"), "encoders[1].align", ["kind", "ratio"]),
    (
        "align blocks zero",
        _set("encoders", 1, "align", "blocks", value=0),
        "encoders[1].align.blocks",
        [POSITIVE],
    ),
    (
        "align ratio text",
        _set("encoders", 1, "align", "ratio", value="4"),
        "encoders[1].align.ratio",
        [POSITIVE],
    ),
    (
        "attention typo",
        _set("attn_implementation", value="sdpaa"),
        "attn_implementation",
        list(ATTN_IMPLEMENTATIONS),
    ),
    (
        "two-value image_mean",
        _set("encoders", 0, "image_mean", value=[0.5, 0.5]),
        "encoders[0].image_mean",
        [RGB],
    ),
    (
        "four-value image_std",
        _set("encoders", 0, "image_std", value=[0.5, 0.5, 0.5, 0.5]),
        "encoders[0].image_std",
        ["a list of 3"],
    ),
    (
        "text image_mean",
        _set("encoders", 0, "image_mean", value=["0.5"] * 3),
        "encoders[0].image_mean",
        [RGB],
    ),
    ("token_grid as text", _set("token_grid", value="4"), "token_grid", [GRID]),
    ("negative token_grid", _set("token_grid", value=-4), "token_grid", [GRID]),
    ("zero token_grid", _set("token_grid", value=0), "token_grid", [GRID]),
    ("image_size as text", _set("encoders", 1, "image_size", value="32"), "encoders[1].image_size", [GRID]),
    ("resample typo", _set("token_resample", value="nearest"), "token_resample", TOKEN_RESAMPLERS.names()),
    ("layerscale typo", _set("layerscale", value="max"), "layerscale", LAYERSCALES.names()),
    ("branch fusion typo", _set("branch_fusion", value="add"), "branch_fusion", BRANCH_FUSIONS.names()),
    ("lln_shared as text", _set("lln_shared", value="yes"), "lln_shared", ["true or false"]),
    (
        "lln_shared without an lln fusion",
        _shared_with_mean_fusions,
        "lln_shared = true has no effect",
        [n for n in FUSIONS.names() if n.startswith("lln_")],
    ),
    ("path as a number", _set("encoders", 0, "path", value=7), "encoders[0].path", ["a non-empty string"]),
    ("unknown field", _set("tokn_grid", value=4), "unknown field(s) ['tokn_grid']", ["token_grid"]),
    (
        "unknown encoder field",
        _set("encoders", 1, "fusion_kind", value="x"),
        "encoders[1]: unknown field(s) ['fusion_kind']",
        ["fusion"],
    ),
    (
        "unknown align field",
        _set("encoders", 1, "align", "act", value="gelu"),
        "encoders[1].align",
        ["activation"],
    ),
    ("missing path", lambda p: p["encoders"][0].pop("path"), "encoders[0]: missing field(s) ['path']", []),
    ("encoders not a list", _set("encoders", value={"clip": {}}), "encoders", ["a non-empty list"]),
]


@pytest.mark.parametrize(("edit", "where", "allowed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_preset_names_file_field_and_allowed_values(
    tmp_path: Path, edit: Edit, where: str, allowed: list[str]
):
    message, path = _message(tmp_path, edit)
    assert f"preset file '{path}'" in message
    assert where in message
    for value in allowed:
        assert value in message


def test_bad_value_is_quoted_in_the_message(tmp_path: Path):
    message, _ = _message(tmp_path, _set("encoders", 0, "fusion", value="lln_layrscale"))
    assert "encoders[0].fusion = 'lln_layrscale' is not one of" in message


def test_ints_are_numbers_for_image_mean(tmp_path: Path):
    path = _write(tmp_path, _set("encoders", 0, "image_mean", value=[0, 1, 0.5]))
    assert load_preset(str(path)).encoders[0].image_mean == [0, 1, 0.5]


def test_a_newly_registered_fusion_is_valid_without_touching_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = _write(tmp_path, _set("encoders", 0, "fusion", value="my_mean"))
    with pytest.raises(SpecError, match="my_mean"):
        load_preset(str(path))
    monkeypatch.setitem(FUSIONS._items, "my_mean", MeanFusion)
    assert load_preset(str(path)).encoders[0].fusion == "my_mean"


def test_out_of_range_layer_names_the_file_when_resolved(tiny_dir: Path, tmp_path: Path):
    path = _write(tmp_path, _set("encoders", 1, "layers", value=[3, 9]))
    with pytest.raises(SpecError) as err:
        spec_for_name(str(path))
    message = str(err.value)
    assert f"preset file '{path}'" in message and "encoders[1].layers [9] out of range" in message
    assert "from -5 to 4" in message  # 4 blocks: hidden_states[-5] is the embeddings, [4] the last block


def test_saved_config_errors_name_the_field(tiny_dir: Path):
    saved = spec_for_name("tiny-comm").to_dict()
    saved["encoders"][0]["layers"] = "1-4"
    cfg = SimpleNamespace(mm_comm=saved, mm_projector_type="linear", hidden_size=16)
    with pytest.raises(SpecError, match=r"saved config field 'mm_comm': encoders\[0\]\.layers = '1-4'"):
        ct.build_vision_projector(cfg)


@pytest.mark.parametrize("path", sorted(REPO_PRESETS.glob("*.json")), ids=lambda p: p.stem)
def test_shipped_preset_files_validate(path: Path):
    spec = load_preset(str(path))
    assert spec.name == path.stem and spec.description


@pytest.mark.parametrize("name", sorted(p.stem for p in REPO_PRESETS.glob("tiny-*.json")))
def test_saved_form_of_resolved_presets_validates(tiny_dir: Path, name: str):
    spec = spec_for_name(name)
    assert ct.CommSpec.from_dict(spec.to_dict(), source="saved config field 'mm_comm'") == spec


def test_layer_indices_one_rule():
    assert resolve_layer_indices([-1, -5, 0, 2], 4) == [4, 0, 0, 2]  # hidden_states of 4 blocks: 0..4
    with pytest.raises(SpecError, match=r"x \[5, -6\] out of range .* from -5 to 4"):
        resolve_layer_indices([5, -6], 4, "x")
    assert resolve_layer_indices([1, 4], 4, blocks_only=True) == [1, 4]
    with pytest.raises(SpecError, match=r"--layers \[0, -1\] out of range .*\(block indices run from 1 to 4"):
        resolve_layer_indices([0, -1], 4, "--layers", blocks_only=True)


def test_preset_that_is_not_an_object_is_named(tmp_path: Path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(
        SpecError, match=r"preset file '.*list\.json': the spec = \[1, 2\] is not a JSON object"
    ):
        load_preset(str(path))
