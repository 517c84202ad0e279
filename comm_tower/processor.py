"""The tower's image processor: one crop for every encoder, LLaVA's `preprocess` interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image


def expand_to_square(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pad an image to a square, centred, with `background` (LLaVA's `expand2square`)."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def mean_colour(image_mean: Sequence[float]) -> tuple[int, int, int]:
    """The normalisation mean as an 8-bit RGB colour (what LLaVA pads with)."""
    if len(image_mean) != 3:
        raise ValueError(f"image_mean {list(image_mean)}: need three values (R, G, B)")
    r, g, b = (int(255 * m) for m in image_mean)
    return (r, g, b)


def pad_to_square(img: Image.Image, image_mean: Sequence[float]) -> Image.Image:
    """LLaVA's 'pad' aspect ratio: centre `img` on a square canvas filled with the mean colour."""
    return expand_to_square(img, mean_colour(image_mean))


def pixel_values(image: Image.Image, image_processor: Any, image_aspect_ratio: str = "pad") -> torch.Tensor:
    """`[3, H, W]` pixels as the model was trained to see them: 'pad' to square, 'resize' (stretch) or 'square'."""
    if image_aspect_ratio == "resize":
        crop = image_processor.crop_size
        image = image.resize((crop["width"], crop["height"]), Image.BICUBIC)
    elif image_aspect_ratio == "pad":
        image = pad_to_square(image, image_processor.image_mean)
    return image_processor.preprocess(image, return_tensors="pt")["pixel_values"][0]


class CommImageProcessor:
    """Resize the shortest edge, centre-crop, scale to [0,1] and normalise with the first encoder's stats.

    The other encoders' normalisation is derived from this one tensor inside the tower (an exact
    per-channel affine map), so every encoder sees the same crop.
    """

    model_input_names: Sequence[str] = ("pixel_values",)

    def __init__(
        self,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        resample: int = Image.BICUBIC,
        pad_to_square: bool = False,
    ) -> None:
        self.image_mean = [float(m) for m in image_mean]
        self.image_std = [float(s) for s in image_std]
        self.size = {"shortest_edge": image_size}
        self.crop_size = {"height": image_size, "width": image_size}
        self.resample = resample
        self.pad_to_square = pad_to_square

    @property
    def background(self) -> tuple[int, int, int]:
        """The padding colour: the mean in 0-255 (LLaVA pads with it)."""
        return mean_colour(self.image_mean)

    def __call__(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> dict[str, Any]:
        """Alias of `preprocess`."""
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **_: Any) -> dict[str, Any]:
        """One PIL image or a list -> `{'pixel_values': [B,3,S,S]}` (torch for 'pt', else numpy)."""
        if isinstance(images, Image.Image):
            images = [images]
        arrays = [self._one(img) for img in images]
        batch = np.stack(arrays)
        pixel_values: Any = torch.from_numpy(batch) if return_tensors == "pt" else batch
        return {"pixel_values": pixel_values}

    def _one(self, img: Image.Image) -> np.ndarray:
        if not isinstance(img, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(img).__name__}")
        img = img.convert("RGB")
        if self.pad_to_square:
            img = pad_to_square(img, self.image_mean)
        img = self._resize_shortest(img)
        img = self._centre_crop(img)
        arr = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        return ((arr - mean) / std).transpose(2, 0, 1).astype(np.float32)

    def _resize_shortest(self, img: Image.Image) -> Image.Image:
        target = self.size["shortest_edge"]
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = target, int(target * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        return img if size == (w, h) else img.resize(size, resample=self.resample)

    def _centre_crop(self, img: Image.Image) -> Image.Image:
        ch, cw = self.crop_size["height"], self.crop_size["width"]
        w, h = img.size
        top, left = int((h - ch) / 2), int((w - cw) / 2)
        return img.crop((left, top, left + cw, top + ch))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (for logs and saved configs)."""
        return {
            "image_size": self.size["shortest_edge"],
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "pad_to_square": self.pad_to_square,
        }


def renormalise(
    pixels: torch.Tensor,
    src_mean: Sequence[float],
    src_std: Sequence[float],
    dst_mean: Sequence[float],
    dst_std: Sequence[float],
) -> torch.Tensor:
    """Exactly re-express a tensor normalised with (src_mean, src_std) in (dst_mean, dst_std)."""
    if list(src_mean) == list(dst_mean) and list(src_std) == list(dst_std):
        return pixels
    shape = (1, -1, 1, 1)
    sm, ss, dm, ds = (
        torch.tensor(v, dtype=torch.float64).view(shape) for v in (src_mean, src_std, dst_mean, dst_std)
    )
    scale = (ss / ds).to(pixels.dtype).to(pixels.device)
    shift = ((sm - dm) / ds).to(pixels.dtype).to(pixels.device)
    return pixels * scale + shift
