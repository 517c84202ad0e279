"""A stage-1 run (projector only, no DeepSpeed) killed after a checkpoint resumes exactly when rerun as is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _serve_helpers import red_image

from comm_tower.zoo.tiny_lm import build_tiny_llama

pytestmark = pytest.mark.slow

STEPS, SAVE_EVERY = 24, 4


def _command(root: Path, lm: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "comm_tower.train",
        "--model_name_or_path", str(lm), "--version", "plain", "--tune_mm_mlp_adapter", "True",
        "--data_path", str(root / "data.json"), "--image_folder", str(root), "--vision_tower", "tiny-comm",
        "--per_device_train_batch_size", "2", "--max_steps", str(STEPS), "--learning_rate", "1e-2",
        "--use_cpu", "True", "--save_strategy", "steps", "--save_steps", str(SAVE_EVERY),
        "--logging_steps", "1", "--report_to", "none", "--model_max_length", "256",
        "--dataloader_num_workers", "0", "--seed", "7", "--output_dir", str(out),
    ]  # fmt: skip


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}


def _losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


@pytest.fixture(scope="module")
def setup(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Data, a tiny LLM, and an uninterrupted run of the same command to compare with."""
    root = tmp_path_factory.mktemp("resume")
    lm = build_tiny_llama(root / "lm")
    red_image(root / "red.png")
    captions = ["A red square.", "A red box.", "Red.", "A square, red.", "A small red picture.", "It is red."]
    records = [
        {"id": str(i), "image": "red.png", "conversations": [
            {"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": captions[i % len(captions)]}]}
        for i in range(12)
    ]  # fmt: skip
    (root / "data.json").write_text(json.dumps(records))
    whole = root / "whole"
    subprocess.run(_command(root, lm, whole), env=_env(), check=True, capture_output=True, timeout=600)
    return root, lm, whole


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_rerun_after_a_kill_resumes_from_the_newest_checkpoint_and_matches_an_uninterrupted_run(setup, how):
    root, lm, whole = setup
    out = root / f"killed-{how.name}"
    first = SAVE_EVERY * 2
    proc = subprocess.Popen(
        _command(root, lm, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (out / f"checkpoint-{first}" / "trainer_state.json").is_file():
        assert proc.poll() is None, "the run ended before its checkpoint appeared"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    proc.send_signal(how)
    proc.wait(timeout=60)
    assert proc.returncode != 0, "the run was meant to be killed, not to finish"
    assert not (out / "mm_projector.bin").exists()
    saved = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert saved and max(saved) < STEPS

    rerun = subprocess.run(_command(root, lm, out), env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed_from = max(s for s in saved if (out / f"checkpoint-{s}" / "trainer_state.json").is_file())
    assert f"checkpoint-{resumed_from}" in rerun.stderr

    expected, got = _losses(whole), _losses(out)
    later = [s for s in range(resumed_from + 1, STEPS + 1)]
    assert later and all(s in got for s in later)
    assert [got[s] for s in later] == pytest.approx([expected[s] for s in later], rel=1e-6, abs=1e-7)
    final = torch.load(out / "mm_projector.bin", map_location="cpu")
    reference = torch.load(whole / "mm_projector.bin", map_location="cpu")
    assert final.keys() == reference.keys() and len(final) > 0
    for key in final:
        torch.testing.assert_close(final[key], reference[key], rtol=1e-6, atol=1e-7)


def test_a_checkpoint_left_half_written_is_passed_over(setup):
    """A kill while saving leaves a folder without a whole trainer_state.json: the rerun uses the one before."""
    from comm_tower.train.arguments import TrainingArguments
    from comm_tower.train.cli import find_resume

    root, _, _ = setup
    out = root / "half"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-8").mkdir()  # interrupted while writing: weights maybe, state not yet
    (out / "checkpoint-8" / "mm_projector.bin").write_bytes(b"")
    args = TrainingArguments(output_dir=str(out), use_cpu=True, report_to="none")
    assert find_resume(args) == str(out / "checkpoint-4")
    # killed while the state itself was written: created empty, or cut mid-document
    for cut in ("", '{"global_step": 1'):
        (out / "checkpoint-8" / "trainer_state.json").write_text(cut)
        assert find_resume(args) == str(out / "checkpoint-4"), repr(cut)
    assert (
        find_resume(TrainingArguments(output_dir=str(root / "empty"), use_cpu=True, report_to="none")) is None
    )
