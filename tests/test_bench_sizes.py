"""Benchmark sizes come from the zoo's `comm` preset: its layers at every scale, encoder shapes as tabled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comm_tower.bench.sizes import ENCODER_SHAPES, SIZES, comm_spec, scale_layers, shape_of, sized_spec
from comm_tower.spec import SpecError

PRESETS = Path(__file__).resolve().parents[1] / "zoo" / "presets"


def _layers(preset: str) -> dict[str, list[int]]:
    data = json.loads((PRESETS / f"{preset}.json").read_text())
    return {e["name"]: e["layers"] for e in data["encoders"]}


def _spec_layers(size: str) -> dict[str, list[int]]:
    return {e.name: e.layers for e in sized_spec(SIZES.get(size)).encoders}


def test_large_runs_the_comm_preset_layers_unchanged():
    assert _spec_layers("large") == _layers("comm")


def test_tiny_layers_match_the_zoos_tiny_twin_of_comm():
    assert _spec_layers("tiny") == _layers("tiny-comm")  # written by hand for 4-block encoders


def test_base_takes_each_layer_at_the_same_relative_depth():
    assert _spec_layers("base") == {"clip": list(range(1, 13)), "dinov2": [10, 11, 12]}


def test_scale_layers_resolves_negative_indices_and_keeps_the_embedding_output():
    assert scale_layers([-1, -2], 24, 4) == [4]
    assert scale_layers([0, 12, 24], 24, 12) == [0, 6, 12]
    assert scale_layers([1, 2], 24, 4) == [1]


def test_tiny_encoders_are_built_with_the_tabled_shapes(tmp_path: Path):
    spec = comm_spec(SIZES.get("tiny"), tmp_path)
    for enc in spec.encoders:
        shape = ENCODER_SHAPES[(enc.family, "tiny")]
        assert (enc.width, enc.num_layers, enc.encoder_image_size, enc.patch_size) == (
            shape.width,
            shape.depth,
            shape.image,
            shape.patch,
        )
        assert Path(enc.path).parent == tmp_path / "tiny"
    assert spec.image_size == ENCODER_SHAPES[("clip", "tiny")].image


def test_a_family_without_a_tabled_shape_names_the_table():
    with pytest.raises(SpecError, match=r"no benchmark shape for encoder family 'siglip'.*ENCODER_SHAPES"):
        shape_of("siglip", "base")
