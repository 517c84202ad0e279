"""An import hook that patches LLaVA's builder modules the moment they are imported (no code change).

`install()` adds a finder to `sys.meta_path`; it does nothing until `llava.model.multimodal_*.builder`
is imported, so Python processes that never touch LLaVA pay only for this small module. The `.pth`
file written by `python -m llava_patch.pth install` calls `install()` at interpreter start-up.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
from types import ModuleType
from typing import Any

from llava_patch.flavour import BUILDERS

logger = logging.getLogger(__name__)

DISABLE_ENV = "COMM_LLAVA_PATCH"  # set to 0 to switch the hook off for one process
_TARGETS = frozenset(module for module, _ in BUILDERS)


class _PatchAfterExec(importlib.abc.Loader):
    """Runs the real loader, then wraps the builder the module just defined."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        from llava_patch.patch import patch_builder_module

        patch_builder_module(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_code, ...: the real loader's
        return getattr(self._inner, name)


class LlavaBuilderFinder(importlib.abc.MetaPathFinder):
    """Finds LLaVA's builder modules with the other finders and hands back a patching loader."""

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchAfterExec(spec.loader)
                return spec
        return None


def install() -> bool:
    """Register the hook (once); patch right away if LLaVA's builders are already imported."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return False
    if not any(isinstance(f, LlavaBuilderFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LlavaBuilderFinder())
    if any(name in sys.modules for name in _TARGETS):
        from llava_patch.patch import apply

        apply()
    return True
