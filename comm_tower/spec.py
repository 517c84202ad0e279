"""Typed COMM tower specs: what a preset file says, validated, and what a saved config stores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """A preset or saved spec has a bad field; the message names it and the fix."""


ALIGN_KINDS = ("none", "linear", "mlp")
BRANCH_FUSIONS = ("concat", "sum")
LAYERSCALE_MODES = ("sum", "softmax", "free")
TOKEN_RESAMPLE = ("bilinear", "area")


@dataclass
class AlignSpec:
    """The alignment MLP after a branch's MFM (the paper's best: 2 blocks, ratio 4, GELU)."""

    kind: str = "none"
    blocks: int = 2
    ratio: int = 4
    activation: str = "gelu"

    def validate(self, where: str) -> None:
        """Raise SpecError naming the bad field."""
        _check_choice(self.kind, ALIGN_KINDS, f"{where}.align.kind")
        if self.kind == "mlp" and (self.blocks < 1 or self.ratio < 1):
            raise SpecError(f"{where}.align: blocks and ratio must be >= 1, got {self.blocks}, {self.ratio}")


@dataclass
class EncoderSpec:
    """One encoder branch: which weights, which layers, how they merge.

    `width`, `num_layers`, `encoder_image_size`, `patch_size` and `layer_indices` are resolved from the
    encoder's config (no weights) and stored, so a saved spec rebuilds everything without the files.
    """

    name: str
    family: str
    path: str
    layers: list[int]
    fusion: str = "lln_layerscale"
    align: AlignSpec = field(default_factory=AlignSpec)
    image_size: int | None = None  # None: the same crop as the first encoder
    image_mean: list[float] | None = None  # None: the family's default normalisation
    image_std: list[float] | None = None
    # resolved from the encoder config
    width: int | None = None
    num_layers: int | None = None
    encoder_image_size: int | None = None
    patch_size: int | None = None
    layer_indices: list[int] | None = None

    def validate(self, where: str) -> None:
        """Raise SpecError naming the bad field."""
        if not self.layers:
            raise SpecError(f"{where}.layers is empty; list the hidden_states indices to use, e.g. [-2]")
        if len(set(self.layers)) != len(self.layers):
            raise SpecError(f"{where}.layers has duplicates: {self.layers}")
        self.align.validate(where)
        if self.num_layers is not None:
            n = self.num_layers
            bad = [k for k in self.layers if not -(n + 1) <= k <= n]
            if bad:
                raise SpecError(
                    f"{where}.layers {bad} out of range for an encoder with {n} blocks "
                    f"(hidden_states indices run from {-(n + 1)} to {n})"
                )

    @property
    def resolved(self) -> bool:
        """True once the encoder's config facts are filled in."""
        return self.width is not None and self.layer_indices is not None

    @property
    def grid(self) -> int:
        """Token grid side of this encoder at the size it runs."""
        return self.run_size // self.patch_size

    @property
    def run_size(self) -> int:
        """Pixel size this encoder sees (set by `CommSpec.resolve`)."""
        if self.image_size is None:
            raise SpecError(f"encoder '{self.name}' has no image size; resolve the spec first")
        return self.image_size


@dataclass
class CommSpec:
    """A whole tower + fusion spec: the content of a `zoo/presets/*.json` file."""

    name: str
    encoders: list[EncoderSpec]
    branch_fusion: str = "concat"
    token_grid: int | None = None  # pool to this many tokens per side (token budget); None keeps all
    token_resample: str = "bilinear"
    layerscale: str = "sum"
    lln_shared: bool = False
    attn_implementation: str = "sdpa"
    description: str = ""

    def validate(self) -> None:
        """Check every field; raise SpecError naming the first bad one."""
        if not self.encoders:
            raise SpecError(f"preset '{self.name}': 'encoders' is empty")
        names = [e.name for e in self.encoders]
        if len(set(names)) != len(names):
            raise SpecError(f"preset '{self.name}': encoder names repeat: {names}")
        for i, enc in enumerate(self.encoders):
            enc.validate(f"preset '{self.name}' encoders[{i}] ('{enc.name}')")
        _check_choice(self.branch_fusion, BRANCH_FUSIONS, "branch_fusion")
        _check_choice(self.layerscale, LAYERSCALE_MODES, "layerscale")
        _check_choice(self.token_resample, TOKEN_RESAMPLE, "token_resample")
        if self.token_grid is not None and self.token_grid < 1:
            raise SpecError(f"token_grid must be >= 1 or null, got {self.token_grid}")

    @property
    def resolved(self) -> bool:
        """True when every encoder's config facts are known."""
        return all(e.resolved for e in self.encoders)

    @property
    def image_size(self) -> int:
        """The crop every encoder sees (the first encoder's)."""
        return self.encoders[0].run_size

    @property
    def grid(self) -> int:
        """Token grid side after resampling and pooling."""
        return self.token_grid or self.encoders[0].grid

    @property
    def num_tokens(self) -> int:
        """Visual tokens per image."""
        return self.grid**2

    @property
    def stacked_width(self) -> int:
        """Channels the tower emits: every selected layer of every encoder stacked."""
        return sum(len(e.layers) * _need(e.width) for e in self.encoders)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict, the form saved in model configs as `mm_comm`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "spec") -> CommSpec:
        """Build and validate from a preset file's dict; errors name `source` and the field."""
        try:
            encoders = []
            for i, raw in enumerate(_need_list(data, "encoders", source)):
                raw = dict(raw)
                raw["align"] = AlignSpec(**raw.get("align", {}))
                _reject_unknown(raw, EncoderSpec, f"{source}: encoders[{i}]")
                encoders.append(EncoderSpec(**raw))
            top = {k: v for k, v in data.items() if k != "encoders"}
            _reject_unknown(top, cls, source)
            spec = cls(encoders=encoders, **top)
        except TypeError as err:
            raise SpecError(f"{source}: {err}; see zoo/README.md for the preset format") from None
        spec.validate()
        return spec


def _need(value: int | None) -> int:
    if value is None:
        raise SpecError("spec is not resolved yet (encoder widths unknown); call resolve_spec first")
    return value


def _need_list(data: dict[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list):
        raise SpecError(f"{source}: field '{key}' must be a list of encoder entries")
    return value


def _reject_unknown(raw: dict[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")


def _check_choice(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise SpecError(f"{where} = '{value}' is not one of {list(choices)}")
