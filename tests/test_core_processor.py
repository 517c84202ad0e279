"""One crop for every encoder: our processor equals HF's CLIP processor; DINOv2's normalisation is exact."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BitImageProcessor, CLIPImageProcessor

import comm_tower as ct
from comm_tower.encoders.dinov2 import IMAGENET_MEAN, IMAGENET_STD
from comm_tower.processor import expand_to_square, renormalise

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(80, 50), (50, 90), (64, 64), (200, 120)])
def test_processor_equals_hf_clip_processor(size: tuple[int, int]):
    ours = ct.CommImageProcessor(64, CLIP_MEAN, CLIP_STD)
    hf = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    img = _image(*size)
    a = ours.preprocess(img, return_tensors="pt")["pixel_values"]
    b = hf.preprocess(img, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_dinov2_normalisation_matches_dinov2_processor(tiny_dir: Path):
    tower = ct.build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"), delay_load=True)
    img = _image(120, 90, seed=3)
    clip_pixels = tower.image_processor.preprocess(img, return_tensors="pt")["pixel_values"]
    (src_mean, src_std), (dst_mean, dst_std) = tower._norms
    ours = renormalise(clip_pixels, src_mean, src_std, dst_mean, dst_std)
    dino = BitImageProcessor(
        size={"shortest_edge": 64},
        crop_size={"height": 64, "width": 64},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        resample=Image.BICUBIC,
    )
    expected = dino.preprocess(img, return_tensors="pt")["pixel_values"]
    assert (dst_mean, dst_std) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_tower_feeds_each_encoder_its_own_normalisation(tiny_dir: Path):
    tower = ct.build_vision_tower(SimpleNamespace(mm_vision_tower="tiny-comm"))
    img = _image(64, 64, seed=5)
    pixels = tower.image_processor.preprocess(img, return_tensors="pt")["pixel_values"]
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    dino_px = (arr - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        feats = tower(pixels)
        dino_direct = tower.encoder("dinov2")(dino_px)
    clip_width = 4 * 64
    torch.testing.assert_close(feats[..., clip_width:], dino_direct, rtol=1e-4, atol=1e-4)


def test_expand_to_square_pads_with_background_centred():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    sq = expand_to_square(img, (1, 2, 3))
    assert sq.size == (40, 40)
    arr = np.asarray(sq)
    assert tuple(arr[0, 0]) == (1, 2, 3) and tuple(arr[20, 20]) == (255, 0, 0)
    assert (arr[10:30, :, 0] == 255).all() and (arr[:10, :, 0] == 1).all()


def test_processor_pads_when_asked_and_exposes_llava_members():
    proc = ct.CommImageProcessor(64, CLIP_MEAN, CLIP_STD, pad_to_square=True)
    assert proc.crop_size == {"height": 64, "width": 64} and proc.size == {"shortest_edge": 64}
    assert proc.image_mean == list(CLIP_MEAN)
    img = _image(90, 30)
    out = proc(img)["pixel_values"]
    padded = proc.preprocess(expand_to_square(img, proc.background))["pixel_values"]
    torch.testing.assert_close(out, padded)
