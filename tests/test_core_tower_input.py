"""What the tower refuses, by name: wrong-family weight folders, and pixels of another shape, type or value."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import comm_tower as ct
from comm_tower.encoders.clip import ClipEncoder
from comm_tower.encoders.dinov2 import Dinov2Encoder
from comm_tower.zoo.tiny_lm import build_tiny_llama


@pytest.fixture(scope="module")
def tower(tiny_dir: Path):
    return ct.build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"))


def _pixels(tower, batch: int = 2) -> torch.Tensor:
    size = tower.image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_good_pixels_give_the_same_features_twice_and_a_list_matches_the_batch(tower):
    px = _pixels(tower)
    first, again = tower(px), tower(px)
    assert first.shape == (2, tower.num_patches, tower.hidden_size)
    assert torch.equal(first, again)
    listed = tower([px[0], px[1]])
    assert [t.shape for t in listed] == [(1, tower.num_patches, tower.hidden_size)] * 2
    torch.testing.assert_close(torch.cat(listed), first)


@pytest.mark.parametrize(
    ("make", "error", "says"),
    [
        (lambda s: torch.zeros(3, s, s), ValueError, "has shape [3, {s}, {s}]"),
        (lambda s: torch.zeros(1, 2, 3, s, s), ValueError, "has shape [1, 2, 3, {s}, {s}]"),
        (lambda s: torch.zeros(0, 3, s, s), ValueError, "empty batch"),
        (lambda s: torch.zeros(2, 1, s, s), ValueError, "has shape [2, 1, {s}, {s}]"),
        (lambda s: torch.zeros(2, 3, s, s + 4), ValueError, "has shape [2, 3, {s}, {w}]"),
        (lambda s: torch.zeros(2, 3, s + 4, s + 4), ValueError, "has shape [2, 3, {w}, {w}]"),
        (lambda s: torch.zeros(2, 3, s, s, dtype=torch.uint8), TypeError, "torch.uint8"),
        (lambda s: torch.zeros(2, 3, s, s, dtype=torch.int64), TypeError, "torch.int64"),
        (lambda s: np.zeros((2, 3, s, s), dtype=np.float32), TypeError, "numpy.ndarray"),
        (lambda s: Image.new("RGB", (s, s)), TypeError, "image_processor.preprocess"),
        (lambda s: [], ValueError, "empty list"),
    ],
    ids=["3d", "5d", "empty", "channels", "width", "size", "uint8", "int64", "numpy", "pil", "empty-list"],
)
def test_bad_pixels_are_refused_naming_what_was_given(tower, make, error, says):
    s = tower.image_size
    with pytest.raises(error) as err:
        tower(make(s))
    message = str(err.value)
    assert says.format(s=s, w=s + 4) in message
    if error is ValueError and "shape" in says:
        assert f"[B, 3, {s}, {s}]" in message


def test_a_list_item_of_the_wrong_height_is_named_by_its_index(tower):
    s = tower.image_size
    with pytest.raises(
        ValueError, match=rf"images\[1\] has shape \[3, {s - 2}, {s}\]; the tower takes \[3, {s}, {s}\]"
    ):
        tower([torch.zeros(3, s, s), torch.zeros(3, s - 2, s)])


def test_nan_or_infinite_pixels_name_the_samples(tower):
    px = _pixels(tower, 4)
    px[1, 0, 0, 0] = float("nan")
    px[3, 2, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or infinite pixels in sample\(s\) \[1, 3\]"):
        tower(px)
    with pytest.raises(ValueError, match=r"images\[0\] has NaN or infinite pixels in the image"):
        tower([px[1]])


def test_a_folder_of_another_family_is_refused_before_loading(tiny_dir: Path, tmp_path: Path):
    llama = build_tiny_llama(tmp_path / "llama")
    for folder, found in ((tiny_dir / "dinov2", "dinov2"), (llama, "llama")):
        with pytest.raises(ValueError, match=rf"'{folder}' are a '{found}' model .*not a clip encoder"):
            ClipEncoder.from_pretrained(str(folder), [-2])
        with pytest.raises(ValueError, match=rf"'{folder}' are a '{found}' model"):
            ct.build_vision_tower(
                SimpleNamespace(mm_vision_tower=f"tiny-comm:clip={folder}"), delay_load=True
            )
    with pytest.raises(ValueError, match=r"'clip_vision_model' model .*not a dinov2 encoder"):
        Dinov2Encoder.read_config(str(tiny_dir / "clip"))
    assert ClipEncoder.read_config(str(tiny_dir / "clip")).model_type == "clip_vision_model"
