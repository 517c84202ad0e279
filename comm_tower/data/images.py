"""Load any image a data set may hold as 8-bit RGB, converting odd modes instead of rejecting them.

Transparent images (RGBA, LA, PA, P with transparency) are composited onto a background: white unless
the caller passes another (training and inference both use white). 16-bit and 32-bit images are
rescaled to 8 bits over their range, never clipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from comm_tower.data.errors import DataError

WHITE = (255, 255, 255)
_FIX_CORRUPT = (
    "fix: re-encode the file (e.g. save it again as PNG/JPEG) or remove the sample, "
    "or run with --skip_bad_samples"
)


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale integer/float pixels of a high bit-depth image into 0..255."""
    arr = arr.astype(np.float64)
    if mode.startswith("I;16"):
        lo, hi = 0.0, 65535.0
    elif mode == "F" and arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
        lo, hi = 0.0, 1.0
    elif mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535 and arr.max() > 255:
        lo, hi = 0.0, 65535.0  # 16-bit data that PIL widened to 32-bit ints
    elif mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 255:
        lo, hi = 0.0, 255.0
    else:  # arbitrary range: stretch what is there
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
    scaled = (arr - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Convert a loaded PIL image of any mode to RGB (alpha composited onto `background`)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_to_uint8(np.asarray(img), mode)).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def load_image(
    source: str | os.PathLike | BinaryIO,
    index: int | None = None,
    field: str = "image",
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Open and fully decode an image as RGB; failures raise DataError naming file, sample and field."""
    name = (
        Path(source).name if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<stream>")
    )
    subject = f"image '{name}'"
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        raise DataError(
            f"file not found at {os.path.abspath(source)}; fix: check --image_folder and the sample's "
            f"'{field}' path, or run with --skip_bad_samples",
            index,
            field,
            subject,
        )
    try:
        with Image.open(source) as img:
            img.seek(0)  # first frame of GIF/TIFF stacks
            img.load()
            return to_rgb(img, background).copy()
    except UnidentifiedImageError:
        raise DataError(f"cannot identify image file; {_FIX_CORRUPT}", index, field, subject) from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken headers, unknown modes
        raise DataError(
            f"corrupt or unreadable image ({err}); {_FIX_CORRUPT}", index, field, subject
        ) from None
