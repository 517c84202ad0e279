"""A comm_llava checkpoint whose config.json has no `mm_encoder_configs` (the encoders' HF configs) reloads
through comm_tower.load_pretrained_model: the encoders' structure from their folders, every weight from the
checkpoint, which holds the tower whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _serve_helpers import random_checkpoint

from comm_tower import load_pretrained_model
from comm_tower.encoders.base import ENCODERS
from comm_tower.zoo.tiny_lm import build_tiny_llama


@pytest.fixture(scope="module")
def checkpoint(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("no-encoder-configs")
    torch.manual_seed(0)
    ckpt = random_checkpoint(build_tiny_llama(root / "lm"), root / "ckpt", tower="tiny-comm")
    config = json.loads((ckpt / "config.json").read_text())
    recorded = config.pop("mm_encoder_configs")
    (ckpt / "config.json").write_text(json.dumps(config))
    return ckpt, recorded


def test_tower_holds_the_encoder_folders_weights(checkpoint):
    ckpt, recorded = checkpoint
    _, model, _, _ = load_pretrained_model(str(ckpt), device="cpu", dtype="float32")
    tower = model.get_vision_tower()
    assert tower.is_loaded and len(tower.encoders) == len(tower.spec.encoders) == 2
    for spec, encoder in zip(tower.spec.encoders, tower.encoders):
        # the folder loaded on its own, the way a training run builds the tower
        folder = ENCODERS.get(spec.family).from_pretrained(spec.path, spec.layers).state_dict()
        loaded = encoder.state_dict()
        assert set(loaded) == set(folder), spec.name
        for key, value in folder.items():
            assert loaded[key].device.type == "cpu" and torch.equal(loaded[key], value), (spec.name, key)
    # recorded again, so a re-save is complete: the configs saved at training, but for where each was read from
    assert _without_source(model.config.mm_encoder_configs) == _without_source(recorded)


def test_missing_encoder_folder_is_one_error_naming_the_field_and_the_fix(checkpoint, tmp_path):
    ckpt, _ = checkpoint
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (moved / name).write_bytes((ckpt / name).read_bytes())
    config = json.loads((ckpt / "config.json").read_text())
    config["mm_comm"]["encoders"][1]["path"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no mm_encoder_configs") as err:
        load_pretrained_model(str(moved), device="cpu", dtype="float32")
    assert str(tmp_path / "gone") in str(err.value) and "COMM_ENCODER_PATHS" in str(err.value)


def _without_source(configs: list[dict]) -> list[dict]:
    """The configs as config.json holds them, less `_name_or_path` (the folder, or nothing when built)."""
    return [{k: v for k, v in c.items() if k != "_name_or_path"} for c in json.loads(json.dumps(configs))]
