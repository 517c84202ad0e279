"""comm-tower: COMM vision towers (multi-level CLIP + DINOv2, MFM fusion) for LLaVA-style MLLMs.

Names are imported on first use, so `comm-chat --help` or a metric import does not pay for torch and
transformers until something needs them. For the same reason the `comm_llava` classes join transformers' auto
classes (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor) when transformers is
imported, before or after `import comm_tower`, rather than at `import comm_tower` itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "build_vision_tower": "comm_tower.builders",
    "build_vision_projector": "comm_tower.builders",
    "AlignSpec": "comm_tower.spec",
    "CommSpec": "comm_tower.spec",
    "EncoderSpec": "comm_tower.spec",
    "SpecError": "comm_tower.spec",
    "CommImageProcessor": "comm_tower.processor",
    "expand_to_square": "comm_tower.processor",
    "CommVisionTower": "comm_tower.tower",
    "load_pretrained_model": "comm_tower.inference.loading",
    "is_comm_tower_name": "comm_tower.zoo",
    "list_presets": "comm_tower.zoo",
    "load_preset": "comm_tower.zoo",
    "resolve_spec": "comm_tower.zoo",
    "spec_for_name": "comm_tower.zoo",
}

__all__ = sorted(_EXPORTS)
# importing these registers the comm_llava config, model and processor with transformers' auto classes
_AUTO_CLASS_MODULES = ("comm_tower.model", "comm_tower.inference.processing")


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'comm_tower' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def transformers_has_comm_llava() -> bool:
    """Whether the installed transformers is new enough for the comm_llava model classes (5.20 on)."""
    from transformers import __version__ as version

    from comm_tower.constants import COMM_LLAVA_MIN_TRANSFORMERS

    major_minor = tuple(int(part) for part in version.split(".")[:2])
    return major_minor >= COMM_LLAVA_MIN_TRANSFORMERS


def register_auto_classes() -> None:
    """Register `comm_llava` with AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor.

    Nothing to register under an older transformers, which the comm_llava classes do not support.
    """
    if not transformers_has_comm_llava():
        return
    for module in _AUTO_CLASS_MODULES:
        importlib.import_module(module)


def _initializing(module: ModuleType | None) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Runs `register_auto_classes` at the first import after transformers has loaded (no torch before that).

    Not while transformers or a comm_tower module is still being imported (our own modules import transformers
    too): then at a later import, the first one after those have finished.
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        transformers = sys.modules.get("transformers")
        if transformers is None or _initializing(transformers):
            return None  # checked first: it runs at every import, and this needs no copy of sys.modules
        if any(_initializing(m) for name, m in list(sys.modules.items()) if name.split(".")[0] == __name__):
            return None
        sys.meta_path.remove(self)
        register_auto_classes()
        return None


if "transformers" in sys.modules:
    register_auto_classes()
elif not any(isinstance(f, _RegisterAfterTransformers) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTransformers())
