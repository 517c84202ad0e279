"""`CommVisionTower`: the LLaVA `CLIPVisionTower` contract over one or more frozen encoders.

It emits every selected layer of every encoder stacked on the channel axis, on one shared token grid;
the projector (`comm_tower.fusion.projector`) does all the learnable merging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from comm_tower.encoders import ENCODERS, VisionEncoder
from comm_tower.processor import CommImageProcessor, renormalise
from comm_tower.registry import Registry
from comm_tower.spec import CommSpec, EncoderSpec

logger = logging.getLogger(__name__)

# A token resampling mode: (`[B, C, side, side]` grid, target side) -> `[B, C, target, target]`.
TOKEN_RESAMPLERS: Registry[Callable[[torch.Tensor, int], torch.Tensor]] = Registry("token resample mode")


@TOKEN_RESAMPLERS.register("bilinear")
def _bilinear(grid: torch.Tensor, target: int) -> torch.Tensor:
    """Bilinear interpolation, antialiased when shrinking."""
    return F.interpolate(
        grid, size=target, mode="bilinear", align_corners=False, antialias=target < grid.shape[-1]
    )


@TOKEN_RESAMPLERS.register("area")
def _area(grid: torch.Tensor, target: int) -> torch.Tensor:
    """Area pooling (adaptive average)."""
    return F.adaptive_avg_pool2d(grid, target)


@dataclass
class TowerConfig:
    """What LLaVA reads from `tower.config`, available before the weights load."""

    hidden_size: int
    image_size: int
    patch_size: int
    comm_spec: dict[str, Any] = field(default_factory=dict)


def encoder_norm(enc: EncoderSpec) -> tuple[list[float], list[float]]:
    """The pixel mean/std an encoder expects: the preset's, else its family's default."""
    family = ENCODERS.get(enc.family)
    return list(enc.image_mean or family.default_mean), list(enc.image_std or family.default_std)


def _device_of(device_map: Any) -> torch.device | None:
    """The device a non-dict `device_map` names (`"auto"`: the first GPU if any); None for none or a dict."""
    if device_map is None or isinstance(device_map, dict):
        return None
    if device_map == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(device_map)


class CommVisionTower(nn.Module):
    """Frozen multi-encoder, multi-layer vision tower with LLaVA's members."""

    def __init__(self, vision_tower: str, spec: CommSpec, delay_load: bool = False) -> None:
        super().__init__()
        if not spec.resolved:
            raise ValueError("CommVisionTower needs a resolved spec (comm_tower.zoo.resolve_spec)")
        self.vision_tower_name = vision_tower
        self.spec = spec
        self.is_loaded = False
        self.select_layer = [e.layers for e in spec.encoders]
        self.select_feature = "patch"
        self.encoders = nn.ModuleList()
        self._norms = [encoder_norm(e) for e in spec.encoders]
        mean, std = self._norms[0]
        self.image_processor = CommImageProcessor(spec.image_size, mean, std)
        self._config = TowerConfig(
            hidden_size=spec.stacked_width,
            image_size=spec.image_size,
            patch_size=spec.image_size // spec.grid,
            comm_spec=spec.to_dict(),
        )
        if not delay_load:
            self.load_model()

    def load_model(self, device_map: Any = None) -> None:
        """Load every encoder's weights (once), drop unused blocks, freeze."""
        if self.is_loaded:
            logger.info("%s is already loaded; load_model call skipped", self.vision_tower_name)
            return
        # A dict map goes to from_pretrained as it is; a device name (or LLaVA's "auto", which transformers
        # refuses for models without `_no_split_modules`) loads on CPU and moves: the encoders are small.
        kwargs = {"device_map": device_map} if isinstance(device_map, dict) else {}
        target = _device_of(device_map)
        for enc in self.spec.encoders:
            family = ENCODERS.get(enc.family)
            encoder = family.from_pretrained(enc.path, enc.layers, self.spec.attn_implementation, **kwargs)
            self.encoders.append(encoder if target is None else encoder.to(target))
            logger.info(
                "encoder '%s' (%s): layers %s of %d, frozen",
                enc.name,
                enc.family,
                enc.layer_indices,
                enc.num_layers,
            )
        self.requires_grad_(False)
        self.is_loaded = True

    def load_structure(self, encoder_configs: list[dict[str, Any]]) -> None:
        """Build the encoders from saved HF configs (see `encoder_configs`) without reading any weights.

        For reloading a checkpoint that holds the tower's weights: the checkpoint then fills them.
        """
        if self.is_loaded:
            raise RuntimeError(f"{self.vision_tower_name} is already loaded")
        if len(encoder_configs) != len(self.spec.encoders):
            raise ValueError(
                f"{len(encoder_configs)} saved encoder configs for tower '{self.spec.name}' with "
                f"{len(self.spec.encoders)} encoders; the saved config is inconsistent"
            )
        for enc, cfg in zip(self.spec.encoders, encoder_configs):
            family = ENCODERS.get(enc.family)
            self.encoders.append(family.from_config(cfg, enc.layers, self.spec.attn_implementation))
        self.requires_grad_(False)
        self.is_loaded = True

    def folder_encoder_configs(self) -> list[dict[str, Any]]:
        """Each encoder's HF config read from its folder, no weights (what `load_structure` takes)."""
        return [ENCODERS.get(e.family).read_config(e.path).to_dict() for e in self.spec.encoders]

    def encoder_configs(self) -> list[dict[str, Any]]:
        """Each loaded encoder's HF config as a dict, in preset order (what `load_structure` takes)."""
        return [enc.model.config.to_dict() for enc in self.encoders]

    def train(self, mode: bool = True) -> CommVisionTower:
        """Encoders stay in eval mode: they are frozen feature extractors."""
        super().train(mode)
        self.encoders.eval()
        return self

    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """`[B,3,H,W]` -> `[B,N,C]`; a list of `[3,H,W]` -> a list of `[1,N,C]`; output in the input dtype.

        H and W are the tower's `image_size`: what `image_processor` produces. Anything else (another
        shape or size, integer or non-finite pixels, PIL images, arrays) is refused with a message naming it.
        """
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError(f"{self.vision_tower_name}: got an empty list of images")
            return [
                self.features(self._checked(img, f"images[{i}]", 3)[None]) for i, img in enumerate(images)
            ]
        return self.features(self._checked(images, "images", 4))

    def _checked(self, pixels: object, name: str, ndim: int) -> torch.Tensor:
        """`pixels` if it is a float tensor of the expected shape with finite values; else a clear error."""
        size = self.spec.image_size
        want = ("[B, 3, " if ndim == 4 else "[3, ") + f"{size}, {size}]"
        if not isinstance(pixels, torch.Tensor):
            raise TypeError(
                f"{self.vision_tower_name}: {name} is a {type(pixels).__module__}.{type(pixels).__name__}; the "
                f"tower takes pixel tensors {want}: run tower.image_processor.preprocess(image, "
                "return_tensors='pt')['pixel_values'] first"
            )
        if pixels.dim() != ndim or pixels.shape[-3] != 3 or tuple(pixels.shape[-2:]) != (size, size):
            raise ValueError(
                f"{self.vision_tower_name}: {name} has shape {list(pixels.shape)}; the tower takes {want} "
                "(the image_processor's crop)"
            )
        if ndim == 4 and pixels.shape[0] == 0:
            raise ValueError(
                f"{self.vision_tower_name}: {name} is an empty batch (shape {list(pixels.shape)})"
            )
        if not pixels.is_floating_point():
            raise TypeError(
                f"{self.vision_tower_name}: {name} holds {pixels.dtype} values; the tower takes normalised "
                "float pixels from its image_processor, not raw 0-255 integers"
            )
        finite = torch.isfinite(pixels.flatten(1) if ndim == 4 else pixels.flatten()[None]).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            where = f"sample(s) {bad[:8]}" if ndim == 4 else "the image"
            raise ValueError(f"{self.vision_tower_name}: {name} has NaN or infinite pixels in {where}")
        return pixels

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels normalised for the first encoder -> stacked layer features on the shared grid."""
        if not self.is_loaded:
            raise RuntimeError(
                f"{self.vision_tower_name}: call load_model() before forward (delay_load=True)"
            )
        src_mean, src_std = self._norms[0]
        x = pixels.to(device=self.device, dtype=torch.float32)
        widths = [len(e.layers) * (e.width or 0) for e in self.spec.encoders]
        # One output buffer: encoders already on the shared grid write their layers straight into their
        # channel slice; only resampled ones go through a temporary. No concatenation copy.
        out = x.new_empty(x.shape[0], self.spec.num_tokens, sum(widths), dtype=self.dtype)
        slices = out.split(widths, dim=-1)
        for enc, espec, (mean, std), dst in zip(self.encoders, self.spec.encoders, self._norms, slices):
            px = renormalise(x, src_mean, src_std, mean, std)
            if espec.run_size != px.shape[-1]:
                px = F.interpolate(
                    px, size=espec.run_size, mode="bicubic", align_corners=False, antialias=True
                )
            if espec.grid == self.spec.grid:
                enc(px, out=dst)
            else:
                dst.copy_(self._to_grid(enc(px), espec.grid))
        return out.to(pixels.dtype)

    def _to_grid(self, tokens: torch.Tensor, side: int) -> torch.Tensor:
        """Resample `[B, side^2, C]` tokens to the shared grid with the spec's `token_resample` mode."""
        target = self.spec.grid
        if side == target:
            return tokens
        b, _, c = tokens.shape
        grid = tokens.transpose(1, 2).reshape(b, c, side, side)
        grid = TOKEN_RESAMPLERS.get(self.spec.token_resample)(grid, target)
        return grid.flatten(2).transpose(1, 2)

    # LLaVA's members --------------------------------------------------------------------------
    @property
    def config(self) -> TowerConfig:
        """`hidden_size`, `image_size`, `patch_size` (and the spec), also before loading."""
        return self._config

    @property
    def hidden_size(self) -> int:
        """Channels per token: selected layers x width, summed over encoders."""
        return self._config.hidden_size

    @property
    def image_size(self) -> int:
        """Crop size in pixels."""
        return self.spec.image_size

    @property
    def num_patches_per_side(self) -> int:
        """Token grid side."""
        return self.spec.grid

    @property
    def num_patches(self) -> int:
        """Visual tokens per image."""
        return self.spec.num_tokens

    @property
    def dtype(self) -> torch.dtype:
        """Encoder parameter dtype (float32 before loading)."""
        return next(self.encoders.parameters()).dtype if self.is_loaded else torch.float32

    @property
    def device(self) -> torch.device:
        """Encoder device (cpu before loading)."""
        return next(self.encoders.parameters()).device if self.is_loaded else torch.device("cpu")

    @property
    def dummy_feature(self) -> torch.Tensor:
        """A zero feature row, as CLIPVisionTower has."""
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    def encoder(self, name: str) -> VisionEncoder:
        """The loaded encoder called `name` in the preset."""
        for enc, espec in zip(self.encoders, self.spec.encoders):
            if espec.name == name:
                return enc
        raise KeyError(f"no encoder '{name}' in {[e.name for e in self.spec.encoders]}")
