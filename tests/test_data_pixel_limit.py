"""The pixel limit: a decompression bomb is refused from its header wherever images are opened."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _data_helpers import conv, save_image
from PIL import Image
from test_data_dataset import _dataset

from comm_tower.data.errors import DataError, ImageTooLargeError
from comm_tower.data.images import DEFAULT_MAX_PIXELS, PIXEL_LIMIT_ENV, load_image, max_image_pixels
from comm_tower.serve.inputs import ImageInputError, open_image

ROOT = Path(__file__).resolve().parents[1]
SIDE = 20_000  # 400 million pixels: 1.2 GB once decoded as RGB, 48 KB as a bilevel PNG


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (SIDE, SIDE)).save(path)
    return path


def test_default_limit_is_pils_and_the_variable_overrides_it(monkeypatch):
    monkeypatch.delenv(PIXEL_LIMIT_ENV, raising=False)
    assert max_image_pixels() == DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "1_000")
    assert max_image_pixels() == 1000
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "0")
    assert max_image_pixels() is None
    for bad in ("lots", "-5", "1.5"):
        monkeypatch.setenv(PIXEL_LIMIT_ENV, bad)
        with pytest.raises(ValueError, match=PIXEL_LIMIT_ENV):
            max_image_pixels()


def test_a_bomb_is_refused_from_its_header_without_decoding(bomb, monkeypatch):
    monkeypatch.delenv(PIXEL_LIMIT_ENV, raising=False)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as err:
        load_image(bomb, index=4, field="image")
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000  # KiB: nothing decoded
    message = str(err.value)
    assert message.startswith("image 'bomb.png' in sample 4 (field 'image'):")
    assert f"{SIDE} x {SIDE} = {SIDE * SIDE:,} pixels" in message and f"{DEFAULT_MAX_PIXELS:,}" in message
    assert PIXEL_LIMIT_ENV in message
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS  # PIL's own setting is left as it was


def test_the_limit_counts_pixels_and_zero_lifts_it(tmp_path, monkeypatch):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (100, 100), (9, 9, 9)).save(small)
    Image.new("RGB", (101, 100), (9, 9, 9)).save(large)
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "10000")
    assert load_image(small).size == (100, 100)
    with pytest.raises(ImageTooLargeError, match="101 x 100 = 10,100 pixels, over the limit of 10,000"):
        load_image(large)
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "0")
    assert load_image(large).getpixel((0, 0)) == (9, 9, 9)


def test_a_bomb_in_training_data_is_skipped_with_skip_bad_samples(tmp_path, bomb, monkeypatch):
    monkeypatch.delenv(PIXEL_LIMIT_ENV, raising=False)
    good = save_image(tmp_path / "red.png")
    (tmp_path / "bomb.png").write_bytes(bomb.read_bytes())
    recs = [
        {"id": str(i), "image": name, "conversations": conv("<image>\nWhat colour?", f"Red {i}.")}
        for i, name in enumerate([good, "bomb.png", good])
    ]
    ds = _dataset(tmp_path, recs, skip_bad_samples=True)
    assert ds[1]["input_ids"].tolist() == ds[2]["input_ids"].tolist()  # sample 2 served in its place
    assert [(s.index, s.field) for s in ds.skipped] == [(1, "image")]
    assert "over the limit" in ds.skipped[0].reason
    with pytest.raises(DataError, match=r"image 'bomb.png' in sample 1 \(field 'image'\): 20000 x 20000"):
        _dataset(tmp_path, recs)[1]


def test_the_chats_image_opener_says_too_large_in_one_line(bomb, monkeypatch):
    monkeypatch.delenv(PIXEL_LIMIT_ENV, raising=False)
    with pytest.raises(ImageInputError) as err:
        open_image(str(bomb))
    assert str(err.value).startswith(f"image '{bomb}' is too large: 20000 x 20000")
    assert "\n" not in str(err.value)


def test_comm_chat_with_a_bomb_exits_2_with_one_line_and_no_traceback(bomb, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "comm_tower.serve.cli",
            "--model-path",
            str(tmp_path),
            "--image-file",
            str(bomb),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("comm-chat: error: image") and "too large" in lines[0]
