"""Load any image a data set may hold as 8-bit RGB, converting odd modes instead of rejecting them.

Transparent images (RGBA, LA, PA, P with transparency) are composited onto a background: white unless
the caller passes another (training and inference both use white). 16-bit and 32-bit images are
rescaled to 8 bits over their range, never clipped.

Every image is checked against a pixel limit before it is decoded (a small file can declare a huge
canvas: a decompression bomb). The limit is PIL's own default, 89,478,485 pixels (e.g. 9459 x 9459);
`COMM_MAX_IMAGE_PIXELS` sets another (a whole number; 0 lifts it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from comm_tower.data.errors import DataError, ImageTooLargeError

T = TypeVar("T")
WHITE = (255, 255, 255)
PIXEL_LIMIT_ENV = "COMM_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS: 1024 * 1024 * 1024 // 4 // 3
_pil_limit_lock = threading.Lock()
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


def max_image_pixels() -> int | None:
    """The pixel limit in force: `COMM_MAX_IMAGE_PIXELS` if set (0: none), else PIL's default."""
    raw = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(
            f"{PIXEL_LIMIT_ENV}={raw!r} is not a whole number; set a pixel count (0 lifts the limit)"
        ) from None
    if value < 0:
        raise ValueError(f"{PIXEL_LIMIT_ENV}={raw!r} is negative; set a pixel count (0 lifts the limit)")
    return value or None


def _over_limit(width: int, height: int, limit: int) -> str:
    return (
        f"{width} x {height} = {width * height:,} pixels, over the limit of {limit:,} "
        f"(a guard against decompression bombs); fix: downscale the image, or set {PIXEL_LIMIT_ENV} "
        "to a larger pixel count"
    )


def _open(source: str | os.PathLike | BinaryIO) -> Image.Image:
    """`Image.open` (header only) without PIL's own bomb check: `load_image` applies the project's limit."""
    with _pil_limit_lock:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def load_image(
    source: str | os.PathLike | BinaryIO,
    index: int | None = None,
    field: str = "image",
    background: tuple[int, int, int] = WHITE,
) -> Image.Image:
    """Open and fully decode an image as RGB; failures raise DataError naming file, sample and field.

    Images over the pixel limit (`max_image_pixels`) are refused from their header, before decoding.
    """
    return _read(source, index, field, lambda img: _decoded(img, background))


def image_size(
    source: str | os.PathLike | BinaryIO, index: int | None = None, field: str = "image"
) -> tuple[int, int]:
    """(width, height) read from the header, under the same checks and errors as `load_image`."""
    return _read(source, index, field, lambda img: img.size)


def _decoded(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    img.seek(0)  # first frame of GIF/TIFF stacks
    img.load()
    return to_rgb(img, background).copy()


def _read(
    source: str | os.PathLike | BinaryIO, index: int | None, field: str, use: Callable[[Image.Image], T]
) -> T:
    """Open `source` (header only), check it exists and is within the pixel limit, then `use` it."""
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
    limit = max_image_pixels()
    try:
        with _open(source) as img:
            if limit is not None and img.width * img.height > limit:
                raise ImageTooLargeError(_over_limit(img.width, img.height, limit), index, field, subject)
            return use(img)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"cannot identify image file; {_FIX_CORRUPT}", index, field, subject) from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken headers, unknown modes
        raise DataError(
            f"corrupt or unreadable image ({err}); {_FIX_CORRUPT}", index, field, subject
        ) from None
