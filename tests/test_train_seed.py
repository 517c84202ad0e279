"""`comm-train --seed` fixes the new modules' random init, whatever the process drew before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _serve_helpers import one_thread, red_image

from comm_tower.train.cli import main
from comm_tower.zoo.tiny_lm import build_tiny_llama

pytestmark = pytest.mark.slow


def _projector_after_one_frozen_step(root: Path, lm: Path, name: str, seed: int) -> dict[str, torch.Tensor]:
    """Stage 1 (projector only) for one step at learning rate 0: the saved projector is its initial weights."""
    out = root / name
    main(
        [
            "--model_name_or_path", str(lm), "--version", "plain", "--tune_mm_mlp_adapter", "True",
            "--data_path", str(root / "data.json"), "--image_folder", str(root), "--vision_tower", "tiny-comm",
            "--per_device_train_batch_size", "2", "--max_steps", "1", "--learning_rate", "0",
            "--use_cpu", "True", "--save_strategy", "no", "--report_to", "none", "--model_max_length", "256",
            "--dataloader_num_workers", "0", "--seed", str(seed), "--output_dir", str(out),
        ]
    )  # fmt: skip
    return torch.load(out / "mm_projector.bin", map_location="cpu")


def test_seed_fixes_the_projector_init_regardless_of_earlier_random_draws(tiny_dir, tmp_path):
    lm = build_tiny_llama(tmp_path / "lm")
    red_image(tmp_path / "red.png")
    record = {
        "image": "red.png",
        "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": "A red square."}],
    }
    (tmp_path / "data.json").write_text(json.dumps([{"id": str(i), **record} for i in range(2)]))
    with one_thread():
        first = _projector_after_one_frozen_step(tmp_path, lm, "a", seed=3)
        torch.rand(12345)  # what building models or drawing data in the same process would consume
        again = _projector_after_one_frozen_step(tmp_path, lm, "b", seed=3)
        other = _projector_after_one_frozen_step(tmp_path, lm, "c", seed=4)
    assert first.keys() == again.keys() and len(first) > 0
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
