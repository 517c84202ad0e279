"""Presets: `zoo/presets/*.json` files, tower names with weight-folder overrides, spec resolution."""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import re
from pathlib import Path

from comm_tower.encoders import ENCODERS
from comm_tower.spec import CommSpec, SpecError, resolve_layer_indices

logger = logging.getLogger(__name__)

_REPO_PRESETS = Path(__file__).resolve().parents[2] / "zoo" / "presets"
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def preset_dirs() -> list[Path]:
    """Folders searched for presets: `$COMM_ZOO_DIR`, the installed package data, the repo's `zoo/presets`."""
    dirs = []
    if os.environ.get("COMM_ZOO_DIR"):
        dirs.append(Path(os.environ["COMM_ZOO_DIR"]))
    dirs.append(Path(__file__).resolve().parent / "presets")
    dirs.append(_REPO_PRESETS)
    return [d for d in dirs if d.is_dir()]


def list_presets() -> list[str]:
    """Names of every preset found."""
    return sorted({p.stem for d in preset_dirs() for p in d.glob("*.json")})


def split_tower_name(name: str) -> tuple[str, dict[str, str]]:
    """`comm:clip=/a,dinov2=/b` -> ('comm', {'clip': '/a', 'dinov2': '/b'}); plain names have no overrides."""
    base, sep, rest = name.partition(":")
    if not sep or "=" not in rest:
        return name, {}
    overrides = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise SpecError(f"tower name '{name}': override '{item}' is not ENCODER=PATH")
        overrides[key.strip()] = value.strip()
    return base, overrides


def _preset_file(base: str) -> Path | None:
    if base.endswith(".json") and Path(base).is_file():
        return Path(base)
    for d in preset_dirs():
        candidate = d / f"{base}.json"
        if candidate.is_file():
            return candidate
    return None


def is_comm_tower_name(name: object) -> bool:
    """True for zoo preset names, preset files and their `:enc=path` overrides; False for anything else."""
    if not isinstance(name, str) or not name:
        return False
    try:
        base, _ = split_tower_name(name)
    except SpecError:
        return False
    return _preset_file(base) is not None


def expand_path(path: str) -> str:
    """Expand `${VAR}` / `${VAR:-default}` and `~` in a preset's weight path."""
    expanded = _VAR.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), path)
    return os.path.expanduser(expanded)


def _find_preset(base: str) -> Path:
    path = _preset_file(base)
    if path is None:
        raise SpecError(
            f"unknown COMM tower '{base}': not a preset ({', '.join(list_presets())}) nor a .json file"
        )
    return path


def preset_source(name: str) -> str:
    """How errors name the preset behind a tower name: `preset file '/path/to/x.json'`."""
    return f"preset file '{_find_preset(split_tower_name(name)[0])}'"


def load_preset(name: str) -> CommSpec:
    """Read and validate a preset by tower name (overrides applied); encoder facts not yet resolved."""
    base, overrides = split_tower_name(name)
    path = _find_preset(base)
    source = f"preset file '{path}'"
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SpecError(f"{source}: invalid JSON ({err})") from None
    if isinstance(data, dict):
        data.setdefault("name", base)
    spec = CommSpec.from_dict(data, source=source)
    known = {e.name for e in spec.encoders}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SpecError(
            f"tower name '{name}': no encoder named {unknown} in preset '{base}' (has {sorted(known)})"
        )
    for enc in spec.encoders:
        enc.path = expand_path(overrides.get(enc.name, enc.path))
    return spec


def resolve_spec(spec: CommSpec, source: str | None = None) -> CommSpec:
    """Fill each encoder's width, depth, sizes and absolute layer indices from its config (no weights).

    Errors name `source` (default: the spec by name), e.g. `preset_source(name)`.
    """
    source = source or f"spec '{spec.name}'"
    out = copy.deepcopy(spec)
    for i, enc in enumerate(out.encoders):
        if enc.resolved:
            continue
        family = ENCODERS.get(enc.family)
        try:
            cfg = family.read_config(enc.path)
        except OSError as err:
            raise SpecError(
                f"{source}: encoders[{i}] ('{enc.name}', {enc.family}): cannot read a config at "
                f"'{enc.path}' ({err}); give a local folder with `{spec.name}:{enc.name}=/path/to/weights`"
            ) from None
        enc.width = cfg.hidden_size
        enc.num_layers = cfg.num_hidden_layers
        enc.encoder_image_size = cfg.image_size
        enc.patch_size = cfg.patch_size
        enc.layer_indices = resolve_layer_indices(
            enc.layers, enc.num_layers, f"{source}: encoders[{i}].layers"
        )
    first = out.encoders[0]
    if first.image_size is None:
        first.image_size = first.encoder_image_size
    for enc in out.encoders[1:]:
        if enc.image_size is None:
            enc.image_size = first.image_size
    out.validate(source)
    return out


@functools.lru_cache(maxsize=64)
def _resolved_by_name(name: str, env_key: str) -> CommSpec:
    return resolve_spec(load_preset(name), preset_source(name))


def spec_for_name(name: str) -> CommSpec:
    """The resolved spec of a tower name (cached per name and tiny-model folder)."""
    return copy.deepcopy(_resolved_by_name(name, os.environ.get("COMM_TINY_DIR", "")))
