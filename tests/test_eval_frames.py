"""The box frame the REC metric inverts is the frame comm-eval's preprocessing really produces."""

import pytest
import torch
from PIL import Image, ImageDraw

from comm_tower.eval.metrics.boxes import to_original
from comm_tower.eval.scoring import ASPECT_TO_FRAME
from comm_tower.inference.generation import pixel_values
from comm_tower.processor import CommImageProcessor


@pytest.mark.parametrize("aspect", sorted(ASPECT_TO_FRAME))
def test_round_trip_through_preprocessing(aspect):
    width, height, box = 192, 96, (48, 24, 96, 72)
    img = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(img).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    proc = CommImageProcessor(
        64, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0), resample=Image.NEAREST
    )
    px = pixel_values(img, proc, aspect)  # what the model sees, [3, 64, 64] in [0, 1]
    ys, xs = torch.nonzero(px[0] > 0.5, as_tuple=True)
    seen = (
        xs.min().item() / 64,
        ys.min().item() / 64,
        (xs.max().item() + 1) / 64,
        (ys.max().item() + 1) / 64,
    )
    back = to_original(seen, width, height, ASPECT_TO_FRAME[aspect])
    assert back == pytest.approx(box, abs=3.0)
