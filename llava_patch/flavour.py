"""Which LLaVA is installed (haotian-liu/LLaVA 1.2.x or LLaVA-NeXT) and where its builders live."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TOWER_MODULE = "llava.model.multimodal_encoder.builder"
PROJECTOR_MODULE = "llava.model.multimodal_projector.builder"
# (module, function) pairs the patch replaces; LLaVA 1.2.x and LLaVA-NeXT use the same ones.
BUILDERS: tuple[tuple[str, str], ...] = (
    (TOWER_MODULE, "build_vision_tower"),
    (PROJECTOR_MODULE, "build_vision_projector"),
)
_NEXT_MARKER = "model/multimodal_resampler"  # only LLaVA-NeXT has a resampler package


class UnsupportedLlavaError(RuntimeError):
    """The installed LLaVA's builders do not have a signature the patch knows."""


@dataclass(frozen=True)
class LlavaFlavour:
    """What the patch found: `name` is `llava-1.2` or `llava-next`, `version` the installed distribution's."""

    name: str
    version: str


def _distribution_version() -> str:
    for dist in ("llava-torch", "llava"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown (not installed as a distribution)"


def detect_flavour() -> LlavaFlavour:
    """Tell LLaVA 1.2.x from LLaVA-NeXT by its package layout; raise ImportError if `llava` is missing."""
    if importlib.util.find_spec("llava") is None:
        raise ImportError(
            "llava_patch: the `llava` package is not importable; install LLaVA first "
            "(`pip install llava-torch==1.2.2.post1 --no-deps`, see docs/llava.md)"
        )
    spec = importlib.util.find_spec("llava")
    # Look on disk: finding `llava.model.*` through importlib would run LLaVA's package __init__ files.
    locations = list(spec.submodule_search_locations or []) if spec else []
    is_next = any((Path(loc) / _NEXT_MARKER).is_dir() for loc in locations)
    return LlavaFlavour(name="llava-next" if is_next else "llava-1.2", version=_distribution_version())


def check_builder_signature(func: Callable, qualname: str, flavour: LlavaFlavour) -> None:
    """Both LLaVAs call builders as `f(cfg, **kwargs)` (projector: `f(config, delay_load=False, **kwargs)`)."""
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    if not positional or not takes_kwargs:
        raise UnsupportedLlavaError(
            f"llava_patch: {qualname}{inspect.signature(func)} in {flavour.name} {flavour.version} is not "
            "`(cfg, **kwargs)`; this LLaVA changed its builder API. Supported: haotian-liu/LLaVA 1.2.x and "
            "LLaVA-NeXT; please report the version."
        )


def _real_model_import_error() -> BaseException | None:
    """Import LLaVA's Llama model file past `llava/__init__.py` and return the exception it raises, if any."""
    saved = {name: mod for name, mod in sys.modules.items() if name == "llava" or name.startswith("llava.")}
    spec = importlib.util.find_spec("llava")
    if spec is None:
        return None
    bare = importlib.util.module_from_spec(spec)  # the package object without running its __init__
    sys.modules["llava"] = bare
    try:
        importlib.import_module("llava.model.language_model.llava_llama")
    except Exception as cause:
        return cause
    finally:
        for name in [n for n in sys.modules if n == "llava" or n.startswith("llava.")]:
            del sys.modules[name]
        sys.modules.update(saved)
    return None


def import_builder_modules() -> dict[str, object]:
    """Import LLaVA's two builder modules (this imports `llava` and its models too)."""
    try:
        return {name: importlib.import_module(name) for name in (TOWER_MODULE, PROJECTOR_MODULE)}
    except ImportError as err:
        # `llava/model/__init__.py` hides the real failure behind `try/except: pass` (LLaVA #1101),
        # leaving only "cannot import name 'LlavaLlamaForCausalLM'": import the model file to show it.
        cause = _real_model_import_error()
        if cause is None:
            raise
        raise ImportError(
            f"llava_patch: importing LLaVA failed because {type(cause).__name__}: {cause} "
            f"(LLaVA itself reports only: {err}); check the versions in constraints/llava.txt"
        ) from cause
