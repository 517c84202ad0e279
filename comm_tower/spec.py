"""Typed COMM tower specs: what a preset file says, validated, and what a saved config stores.

Every error is a `SpecError` naming the spec's source (a preset file, a saved config field), the field
(`encoders[0].layers`), the bad value and what is allowed. Valid names come from the registries that build
each part (encoder families, MFM variants, activations, ...); they are read on first validation, because
those modules need torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn


class SpecError(ValueError):
    """A preset or saved spec has a bad field; the message names it and the fix."""


def resolve_layer_indices(
    layers: Sequence[int], num_layers: int, where: str = "layers", *, blocks_only: bool = False
) -> list[int]:
    """HF `hidden_states` indices (negatives count from the end) -> absolute ones in [0, num_layers].

    `blocks_only` admits block outputs 1..num_layers alone (no embeddings, no negatives). Out-of-range
    indices raise a SpecError naming `where`.
    """
    low = 1 if blocks_only else -(num_layers + 1)
    bad = [k for k in layers if not low <= k <= num_layers]
    if bad:
        allowed = (
            f"block indices run from 1 to {num_layers}"
            if blocks_only
            else f"hidden_states indices run from {low} to {num_layers}"
        )
        raise SpecError(f"{where} {bad} out of range for an encoder with {num_layers} blocks ({allowed})")
    return [k if k >= 0 else num_layers + 1 + k for k in layers]


def allowed_names() -> dict[str, list[str]]:
    """Valid names per kind of spec field, read from the registries that build them."""
    from comm_tower.encoders import ATTN_IMPLEMENTATIONS, ENCODERS
    from comm_tower.fusion.align import ACTIVATIONS, ALIGNS
    from comm_tower.fusion.mfm import FUSIONS, LAYERSCALES
    from comm_tower.fusion.projector import BRANCH_FUSIONS
    from comm_tower.tower import TOKEN_RESAMPLERS

    return {
        "family": ENCODERS.names(),
        "fusion": FUSIONS.names(),
        "fusion with lln_shared": [n for n in FUSIONS.names() if "shared" in FUSIONS.get(n).spec_options],
        "align.kind": ALIGNS.names(),
        "align.activation": ACTIVATIONS.names(),
        "attn_implementation": list(ATTN_IMPLEMENTATIONS),
        "branch_fusion": BRANCH_FUSIONS.names(),
        "layerscale": LAYERSCALES.names(),
        "token_resample": TOKEN_RESAMPLERS.names(),
    }


@dataclass
class AlignSpec:
    """The alignment MLP after a branch's MFM (the paper's best: 2 blocks, ratio 4, GELU)."""

    kind: str = "none"
    blocks: int = 2
    ratio: int = 4
    activation: str = "gelu"

    def validate(self, source: str = "spec", where: str = "align") -> None:
        """Raise SpecError naming `source` and the bad field under `where`."""
        names = allowed_names()
        _choice(self.kind, names["align.kind"], source, f"{where}.kind")
        _positive_int(self.blocks, source, f"{where}.blocks")
        _positive_int(self.ratio, source, f"{where}.ratio")
        _choice(self.activation, names["align.activation"], source, f"{where}.activation")


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

    def validate(self, source: str = "spec", where: str = "encoder") -> None:
        """Raise SpecError naming `source` and the bad field under `where` (e.g. `encoders[0]`)."""
        names = allowed_names()
        _text(self.name, source, f"{where}.name")
        _choice(self.family, names["family"], source, f"{where}.family")
        _text(self.path, source, f"{where}.path")
        _layer_list(self.layers, source, f"{where}.layers")
        _choice(self.fusion, names["fusion"], source, f"{where}.fusion")
        if not isinstance(self.align, AlignSpec):
            _fail(source, f"{where}.align", self.align, "an AlignSpec")
        self.align.validate(source, f"{where}.align")
        _positive_int(self.image_size, source, f"{where}.image_size", optional=True)
        _rgb(self.image_mean, source, f"{where}.image_mean")
        _rgb(self.image_std, source, f"{where}.image_std", positive=True)
        for key in ("width", "num_layers", "encoder_image_size", "patch_size"):
            _positive_int(getattr(self, key), source, f"{where}.{key}", optional=True)
        if self.layer_indices is not None:
            _layer_list(self.layer_indices, source, f"{where}.layer_indices")
        if self.num_layers is not None:
            resolve_layer_indices(self.layers, self.num_layers, f"{source}: {where}.layers")

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
        """Pixel size this encoder sees (set by `comm_tower.zoo.resolve_spec`)."""
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

    def validate(self, source: str | None = None) -> None:
        """Check every field against its type and registry; raise SpecError naming `source` and the first bad field."""
        source = source or f"spec '{self.name}'"
        names = allowed_names()
        _text(self.name, source, "name")
        if not isinstance(self.encoders, list) or not self.encoders:
            _fail(source, "encoders", self.encoders, "a non-empty list of encoder entries")
        for i, enc in enumerate(self.encoders):
            if not isinstance(enc, EncoderSpec):
                _fail(source, f"encoders[{i}]", enc, "an EncoderSpec")
            enc.validate(source, f"encoders[{i}]")
        encoder_names = [e.name for e in self.encoders]
        if len(set(encoder_names)) != len(encoder_names):
            raise SpecError(
                f"{source}: encoder names repeat: {encoder_names}; give each encoder its own name"
            )
        _choice(self.branch_fusion, names["branch_fusion"], source, "branch_fusion")
        _positive_int(self.token_grid, source, "token_grid", optional=True)
        _choice(self.token_resample, names["token_resample"], source, "token_resample")
        _choice(self.layerscale, names["layerscale"], source, "layerscale")
        if not isinstance(self.lln_shared, bool):
            _fail(source, "lln_shared", self.lln_shared, "true or false")
        sharing = names["fusion with lln_shared"]
        if self.lln_shared and not any(e.fusion in sharing for e in self.encoders):
            raise SpecError(
                f"{source}: lln_shared = true has no effect: no encoder's fusion is one of {sharing}; "
                "remove it or use one of those fusions"
            )
        _choice(self.attn_implementation, names["attn_implementation"], source, "attn_implementation")
        if not isinstance(self.description, str):
            _fail(source, "description", self.description, "a string")

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
    def from_dict(cls, data: Any, source: str = "spec") -> CommSpec:
        """Build and validate from a preset file's dict; errors name `source` and the field."""
        if not isinstance(data, dict):
            _fail(source, "the spec", data, "a JSON object with fields " + str(_field_names(cls)))
        raw_encoders = data.get("encoders")
        if not isinstance(raw_encoders, list) or not raw_encoders:
            _fail(source, "encoders", raw_encoders, "a non-empty list of encoder entries")
        encoders = [_encoder_from_dict(raw, source, f"encoders[{i}]") for i, raw in enumerate(raw_encoders)]
        top = {k: v for k, v in data.items() if k != "encoders"}
        _check_fields(top, cls, source, "", required={"name"})
        spec = cls(encoders=encoders, **top)
        spec.validate(source)
        return spec


def _encoder_from_dict(raw: Any, source: str, where: str) -> EncoderSpec:
    """One `encoders[i]` entry -> EncoderSpec (fields checked by name; values by `validate`)."""
    if not isinstance(raw, dict):
        _fail(source, where, raw, f"an object with fields {_field_names(EncoderSpec)}")
    raw = dict(raw)
    align = raw.get("align", {})
    if not isinstance(align, dict):
        _fail(source, f"{where}.align", align, f"an object with fields {_field_names(AlignSpec)}")
    _check_fields(align, AlignSpec, source, f"{where}.align", required=set())
    raw["align"] = AlignSpec(**align)
    _check_fields(raw, EncoderSpec, source, where, required={"name", "family", "path", "layers"})
    return EncoderSpec(**raw)


def _field_names(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _check_fields(raw: dict[str, Any], cls: type, source: str, where: str, required: set[str]) -> None:
    """Reject unknown and missing field names of `raw` (`where`: the entry's path, empty at the top)."""
    prefix = f"{source}: {where}: " if where else f"{source}: "
    known = set(_field_names(cls))
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(f"{prefix}unknown field(s) {unknown}; known: {sorted(known)}")
    missing = sorted(required - set(raw))
    if missing:
        raise SpecError(f"{prefix}missing field(s) {missing}")


def _fail(source: str, where: str, value: Any, expected: str) -> NoReturn:
    raise SpecError(f"{source}: {where} = {value!r} is not {expected}")


def _choice(value: Any, allowed: list[str], source: str, where: str) -> None:
    if not isinstance(value, str) or value not in allowed:
        _fail(source, where, value, f"one of {allowed}")


def _text(value: Any, source: str, where: str) -> None:
    if not isinstance(value, str) or not value:
        _fail(source, where, value, "a non-empty string")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any, source: str, where: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not _is_int(value) or value < 1:
        _fail(source, where, value, "a positive integer" + (" or null" if optional else ""))


def _layer_list(value: Any, source: str, where: str) -> None:
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(k) for k in value):
        _fail(
            source,
            where,
            value,
            "a non-empty list of integers (hidden_states indices, e.g. [-2] or [1, 2, 3])",
        )
    if len(set(value)) != len(value):
        _fail(source, where, value, "a list without duplicates")


def _rgb(value: Any, source: str, where: str, positive: bool = False) -> None:
    if value is None:
        return
    numbers = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if not numbers or len(value) != 3 or (positive and min(value) <= 0):
        kind = "positive numbers" if positive else "numbers"
        _fail(source, where, value, f"null or a list of 3 {kind} (one per RGB channel)")


def _need(value: int | None) -> int:
    if value is None:
        raise SpecError("spec is not resolved yet (encoder widths unknown); call resolve_spec first")
    return value
