"""A comm-train run told to skip bad samples trains on the rest and reports how many it skipped and which."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comm_tower.zoo.tiny_lm import build_tiny_llama

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "comm_tower.train", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def job(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("skip")
    lm = build_tiny_llama(root / "lm")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(root / "red.png")
    (root / "broken.png").write_bytes(b"not a png at all")
    good = {
        "image": "red.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"},
            {"from": "gpt", "value": "A red square."},
        ],
    }
    samples = [
        {"id": "0", **good},
        {"id": "1", **good, "image": "missing.png"},
        {"id": "2", **good},
        {"id": "3", **good, "image": "broken.png"},
        {"id": "4", **good},
        {"id": "5", **good},
    ]
    (root / "data.json").write_text(json.dumps(samples))
    args = [
        "--model_name_or_path",
        str(lm),
        "--version",
        "plain",
        "--tune_mm_mlp_adapter",
        "True",
        "--data_path",
        str(root / "data.json"),
        "--image_folder",
        str(root),
        "--vision_tower",
        "tiny-comm",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "2",
        "--use_cpu",
        "True",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--model_max_length",
        "256",
        "--dataloader_num_workers",
        "0",
    ]
    return root, args


def test_skip_mode_reports_count_and_samples(job: tuple[Path, list[str]]):
    root, args = job
    out = root / "skipping"
    proc = _run([*args, "--skip_bad_samples", "True", "--output_dir", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 2 sample(s)" in proc.stderr
    assert "sample 1:" in proc.stderr and "missing.png" in proc.stderr
    assert "sample 3:" in proc.stderr and "broken.png" in proc.stderr
    recorded = [json.loads(line) for line in (out / "skipped_samples.jsonl").read_text().splitlines()]
    assert sorted({r["index"] for r in recorded}) == [1, 3]
    assert (out / "mm_projector.bin").is_file()


def test_without_skip_mode_a_bad_sample_stops_the_run_with_its_index_and_field(job: tuple[Path, list[str]]):
    root, args = job
    proc = _run([*args, "--output_dir", str(root / "strict")])
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "sample 1" in last and "'image'" in last and "missing.png" in last, last
