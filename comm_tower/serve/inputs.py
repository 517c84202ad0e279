"""The chat's image: a local path or a `file://` URL (never downloaded), opened with one clear error line."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image

from comm_tower.data.errors import DataError, ImageTooLargeError
from comm_tower.data.images import load_image


class ImageInputError(ValueError):
    """An image the chat cannot use; the message is one line naming the input and the fix."""


def local_path(source: str) -> Path:
    """`source` as a local path: plain paths and `file://` URLs; web URLs are refused (no network)."""
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https", "ftp", "s3", "gs"):
        raise ImageInputError(
            f"image '{source}' is a web URL; comm-chat never downloads: save the image and pass its path"
        )
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ImageInputError(f"image '{source}' is on host '{parsed.netloc}'; only local files are read")
        return Path(unquote(parsed.path))
    return Path(source).expanduser()


def open_image(source: str) -> Image.Image:
    """Decode the image at `source` as RGB, or raise ImageInputError with a one-line message."""
    path = local_path(source)
    if not path.exists():
        raise ImageInputError(f"image '{source}' not found (looked at {path.resolve()}); check the path")
    if path.is_dir():
        raise ImageInputError(f"image '{source}' is a folder; pass an image file inside it")
    if not os.access(path, os.R_OK):
        raise ImageInputError(f"image '{source}' cannot be read (permission denied); check its permissions")
    try:
        return load_image(path, field="image")
    except ImageTooLargeError as err:
        raise ImageInputError(f"image '{source}' is too large: {' '.join(err.reason.split())}") from None
    except DataError as err:
        reason = " ".join(err.reason.split(";")[0].split())  # one line
        what = "is not an image file" if reason.startswith("cannot identify") else "is damaged or unreadable"
        raise ImageInputError(
            f"image '{source}' {what} ({reason}); pass a PNG, JPEG, WebP, BMP or GIF file"
        ) from None
