"""Make LLaVA's tower and projector builders resolve COMM names first, and leave other towers to LLaVA.

LLaVA picks a tower by `os.path.exists(name)` or name prefixes, so a COMM preset file path would be
loaded as CLIP (LLaVA-NeXT also sends any name containing `clip` to CLIP). The patched builders ask
`comm_tower` first and call LLaVA's own builder for every name that is not ours. Modules that did
`from ...builder import build_vision_tower` before the patch (e.g. `llava.model.llava_arch`) hold the
old function, so every loaded module's by-name reference is rebound too.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from llava_patch.flavour import (
    BUILDERS,
    LlavaFlavour,
    check_builder_signature,
    detect_flavour,
    import_builder_modules,
)

logger = logging.getLogger(__name__)

_ORIGINAL_ATTR = "__comm_llava_original__"
_lock = threading.RLock()
_state: dict[str, Any] = {"flavour": None}


def wants_comm(cfg: Any, **kwargs: Any) -> bool:
    """True when `cfg` (or LLaVA-NeXT's `vision_cfg` kwarg) describes a COMM tower: the core's check."""
    # imported on first use, so the `.pth` hook costs nothing until LLaVA builds
    from comm_tower.builders import is_comm_config

    return is_comm_config(cfg, kwargs.get("vision_cfg"))


def _wrap_tower_builder(original: Callable) -> Callable:
    @functools.wraps(original)
    def build_vision_tower(vision_tower_cfg: Any, *args: Any, **kwargs: Any) -> Any:
        if wants_comm(vision_tower_cfg, **kwargs):
            from comm_tower import builders

            logger.info("llava_patch: building COMM tower '%s'", builders.tower_name_of(vision_tower_cfg))
            # the core loads the encoders whole under ZeRO-3; the DeepSpeed engine partitions them later
            tower = builders.build_vision_tower(vision_tower_cfg, *args, **kwargs)
            if _flavour().name == "llava-next":
                from llava_patch.next import check_merge_type

                check_merge_type(vision_tower_cfg, tower.vision_tower_name, tower.num_patches_per_side)
            return tower
        return original(vision_tower_cfg, *args, **kwargs)

    setattr(build_vision_tower, _ORIGINAL_ATTR, original)
    return build_vision_tower


def _wrap_projector_builder(original: Callable) -> Callable:
    @functools.wraps(original)
    def build_vision_projector(config: Any, *args: Any, **kwargs: Any) -> Any:
        if wants_comm(config, **kwargs):
            from comm_tower import builders

            logger.info("llava_patch: building COMM projector for '%s'", builders.tower_name_of(config))
            return builders.build_vision_projector(config, *args, **kwargs)
        return original(config, *args, **kwargs)

    setattr(build_vision_projector, _ORIGINAL_ATTR, original)
    return build_vision_projector


_WRAPPERS: dict[str, Callable[[Callable], Callable]] = {
    "build_vision_tower": _wrap_tower_builder,
    "build_vision_projector": _wrap_projector_builder,
}


def _flavour() -> LlavaFlavour:
    """The LLaVA this process patched (detected on first use when only the import hook ran)."""
    return _state["flavour"] or detect_flavour()


def is_patched(func: object) -> bool:
    """True for a builder this module wrapped."""
    return hasattr(func, _ORIGINAL_ATTR)


def original_of(func: Callable) -> Callable:
    """LLaVA's own builder behind a wrapped one (the function itself if it is not wrapped)."""
    return getattr(func, _ORIGINAL_ATTR, func)


def _rebind_everywhere(old: Callable, new: Callable, attr: str) -> list[str]:
    """Point every loaded module's `attr` that is `old` at `new`; return the modules changed."""
    changed = []
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict) and namespace.get(attr) is old:
            namespace[attr] = new
            changed.append(name)
    return changed


def patch_builder_module(module: ModuleType, flavour: LlavaFlavour | None = None) -> None:
    """Wrap the builder function(s) defined in one of LLaVA's builder modules (idempotent)."""
    flavour = flavour or _state["flavour"] or detect_flavour()
    with _lock:
        for module_name, attr in BUILDERS:
            if module.__name__ != module_name:
                continue
            current = getattr(module, attr, None)
            if current is None:
                raise AttributeError(
                    f"llava_patch: {module_name} has no `{attr}` ({flavour.name} {flavour.version})"
                )
            if is_patched(current):
                continue
            check_builder_signature(current, f"{module_name}.{attr}", flavour)
            setattr(module, attr, _WRAPPERS[attr](current))


def apply() -> LlavaFlavour:
    """Patch LLaVA's builders in place, everywhere they were imported; safe to call any number of times."""
    with _lock:
        flavour = _state["flavour"] or detect_flavour()
        modules = import_builder_modules()
        for module_name, attr in BUILDERS:
            module = modules[module_name]
            patch_builder_module(module, flavour)
            wrapped = getattr(module, attr)
            changed = _rebind_everywhere(original_of(wrapped), wrapped, attr)
            if changed:
                logger.debug("llava_patch: rebound %s in %s", attr, ", ".join(changed))
        if _state["flavour"] is None:
            logger.info("llava_patch: COMM towers enabled for %s %s", flavour.name, flavour.version)
        _state["flavour"] = flavour
        return flavour


def remove() -> None:
    """Undo `apply()`: put LLaVA's own builders back everywhere (tests, or switching back in a running process)."""
    with _lock:
        for module_name, attr in BUILDERS:
            module = sys.modules.get(module_name)
            current = getattr(module, attr, None) if module else None
            if current is not None and is_patched(current):
                setattr(module, attr, original_of(current))
                _rebind_everywhere(current, original_of(current), attr)
        _state["flavour"] = None


def is_applied() -> bool:
    """True when both of LLaVA's loaded builder modules hold the COMM-aware builders."""
    return all(
        module_name in sys.modules and is_patched(getattr(sys.modules[module_name], attr, None))
        for module_name, attr in BUILDERS
    )
