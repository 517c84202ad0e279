"""Boxes in model answers: parse `[x1, y1, x2, y2]`, map from the frame the model saw to the original image.

The model answers boxes as floats in [0, 1] of the image it was shown. Which image that is depends on the
preprocessing (`image_aspect_ratio`), so each preprocessing is a registered frame that maps a normalised box
back to pixels of the original `width` x `height` image:

- `pad`: the image was pasted into a square of side max(W, H) (LLaVA's `expand2square`: centred along the
  short side with an integer offset), then resized; normalised coordinates are fractions of that square.
- `resize`: the image was stretched to the model's square; fractions of the original width and height.
- `crop`: shortest side resized then centre-cropped (the CLIP processor's default); fractions of the
  central min(W, H) square of the original (up to the processor's one-pixel rounding).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from comm_tower.registry import Registry

Box = tuple[float, float, float, float]

_NUM = r"(-?\d+(?:\.\d*)?|-?\.\d+)"
_BOX_RE = re.compile(r"[\[\(]\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*[\]\)]")

BOX_FRAMES: Registry[Callable[[Box, int, int], Box]] = Registry("box frame")


def parse_box(text: str) -> Box | None:
    """The first `[x1, y1, x2, y2]` (or parenthesised) group of four numbers in `text`, or None."""
    match = _BOX_RE.search(text)
    if match is None:
        return None
    x1, y1, x2, y2 = (float(g) for g in match.groups())
    return (x1, y1, x2, y2)


@BOX_FRAMES.register("pad")
def from_padded_square(box: Box, width: int, height: int) -> Box:
    """Normalised box in the padded square -> pixels of the original image."""
    side = max(width, height)
    off_x = (height - width) // 2 if height > width else 0
    off_y = (width - height) // 2 if width > height else 0
    x1, y1, x2, y2 = box
    return (x1 * side - off_x, y1 * side - off_y, x2 * side - off_x, y2 * side - off_y)


@BOX_FRAMES.register("resize")
def from_stretched(box: Box, width: int, height: int) -> Box:
    """Normalised box in the stretched square -> pixels of the original image."""
    x1, y1, x2, y2 = box
    return (x1 * width, y1 * height, x2 * width, y2 * height)


@BOX_FRAMES.register("crop")
def from_center_crop(box: Box, width: int, height: int) -> Box:
    """Normalised box in the central square crop -> pixels of the original image."""
    side = min(width, height)
    off_x, off_y = (width - side) / 2, (height - side) / 2
    x1, y1, x2, y2 = box
    return (x1 * side + off_x, y1 * side + off_y, x2 * side + off_x, y2 * side + off_y)


def to_original(box: Box, width: int, height: int, frame: str = "pad") -> Box:
    """Map a normalised box from `frame` to the original image, reorder corners and clip to the image."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    x1, y1, x2, y2 = BOX_FRAMES.get(frame)(box, width, height)
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    return (x1, y1, x2, y2)


def xywh_to_xyxy(box: Sequence[float]) -> Box:
    """COCO `[x, y, w, h]` -> `[x1, y1, x2, y2]`."""
    x, y, w, h = box
    return (x, y, x + w, y + h)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `[x1, y1, x2, y2]` boxes; 0 when the union has no area."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def boxes_to_original_fractions(text: str, width: int, height: int, frame: str) -> str:
    """Rewrite every box in `text` from the model's frame to fractions of the original image (3 decimals).

    lmms-eval's REC tasks read boxes as fractions of the original image; a model trained on padded squares
    answers in the padded frame, so the plugin converts before lmms-eval scores.
    """

    def convert(match: re.Match) -> str:
        box = tuple(float(g) for g in match.groups())
        x1, y1, x2, y2 = to_original(box, width, height, frame)  # type: ignore[arg-type]
        vals = (x1 / width, y1 / height, x2 / width, y2 / height)
        return "[" + ", ".join(f"{v:.3f}" for v in vals) + "]"

    return _BOX_RE.sub(convert, text)
