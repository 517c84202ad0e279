"""Remote code: the package's own modules, flattened into a checkpoint folder for `trust_remote_code=True`.

The files are generated at export time from the installed `comm_tower` sources, so there is no second copy to
keep in step. Every module the config, model and processor import (followed through `comm_tower.*` imports,
those inside functions too) becomes one file, `comm_tower.model.modeling` -> `model_modeling.py`, with its
`comm_tower.x.y` imports rewritten to relative `.x_y` imports: transformers' dynamic-module loader follows
those and copies each file. The generated code needs torch, transformers, numpy and Pillow, nothing else.

Supported transformers versions: `SUPPORTED_TRANSFORMERS` (the oldest is the first whose `PretrainedConfig`
has the sub-config specs `CommLlavaConfig` is declared with; scripts/test_remote_code.sh tests both ends).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from comm_tower.constants import COMM_LLAVA_MIN_TRANSFORMERS

PACKAGE = "comm_tower"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SUPPORTED_TRANSFORMERS = f">={'.'.join(map(str, COMM_LLAVA_MIN_TRANSFORMERS))}.0,<6"
# what the generated code may import besides the standard library
ALLOWED_IMPORTS = frozenset({"torch", "transformers", "numpy", "PIL"})
CONFIG_CLASS = ("comm_tower.model.configuration", "CommLlavaConfig")
MODEL_CLASS = ("comm_tower.model.modeling", "CommLlavaForCausalLM")
PROCESSOR_CLASS = ("comm_tower.inference.processing", "CommProcessor")
_IMPORT_LINE = re.compile(r"^(\s*)from\s+comm_tower((?:\.\w+)*)\s+import\b", re.MULTILINE)


class RemoteCodeError(RuntimeError):
    """The package's modules cannot be flattened into self-contained remote code (a packaging bug)."""


@dataclass(frozen=True)
class RemoteCode:
    """Generated files (name -> source) and the `auto_map` entries that point at them."""

    files: dict[str, str]
    auto_map: dict[str, str]

    def write(self, folder: Path) -> list[Path]:
        """Write every file into `folder`; returns their paths."""
        paths = []
        for name, source in sorted(self.files.items()):
            path = folder / name
            path.write_text(source)
            paths.append(path)
        return paths


def flat_name(module: str) -> str:
    """`comm_tower.model.modeling` -> `model_modeling` (the file's stem in the checkpoint)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        raise RemoteCodeError(f"{module} is not a module of {PACKAGE}")
    return "_".join(parts[1:])


def module_file(module: str) -> Path:
    """The source file of a `comm_tower` module (a package's `__init__.py`)."""
    rel = Path(*module.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel.with_suffix(".py"), PACKAGE_DIR / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise RemoteCodeError(f"no source for {module} under {PACKAGE_DIR}")


def _imported_modules(module: str, tree: ast.Module) -> tuple[set[str], set[str]]:
    """(comm_tower modules `module` imports anywhere, other top-level packages it imports)."""
    ours, others = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    raise RemoteCodeError(
                        f"{module}: 'import {alias.name}' cannot be flattened; use 'from ... import'"
                    )
                others.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top != PACKAGE:
                others.add(top)
                continue
            if node.module == PACKAGE:
                raise RemoteCodeError(
                    f"{module}: 'from comm_tower import ...' cannot be flattened; import the module"
                )
            ours.add(node.module)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if _is_module(sub):
                    raise RemoteCodeError(
                        f"{module}: 'from {node.module} import {alias.name}' imports a module, which the "
                        "flattened code cannot; import names from the module instead"
                    )
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise RemoteCodeError(f"{module}: relative imports cannot be flattened; import from comm_tower.*")
    return ours, others


def _is_module(name: str) -> bool:
    try:
        module_file(name)
    except RemoteCodeError:
        return False
    return True


def closure(entries: list[str]) -> dict[str, str]:
    """Every `comm_tower` module the entry modules reach (module -> source), checked for outside imports."""
    sources: dict[str, str] = {}
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in sources:
            continue
        source = module_file(module).read_text()
        sources[module] = source
        ours, others = _imported_modules(module, ast.parse(source))
        outside = sorted(o for o in others if o not in ALLOWED_IMPORTS and o not in sys.stdlib_module_names)
        if outside:
            raise RemoteCodeError(
                f"{module} imports {outside}: remote code may only import torch, transformers, numpy and PIL"
            )
        todo += sorted(ours - set(sources))
    return sources


def flatten(module: str, source: str) -> str:
    """`source` with `from comm_tower.x.y import` rewritten to `from .x_y import`, under a header naming its origin."""
    rewritten = _IMPORT_LINE.sub(
        lambda m: f"{m.group(1)}from .{flat_name(PACKAGE + m.group(2))} import", source
    )
    header = (
        f"# Generated from {module} by comm-export: remote code for trust_remote_code=True; do not edit.\n"
    )
    return header + rewritten


def generate() -> RemoteCode:
    """The remote code for the config, model and processor classes, and the `auto_map` naming them."""
    entries = [CONFIG_CLASS[0], MODEL_CLASS[0], PROCESSOR_CLASS[0]]
    files = {f"{flat_name(m)}.py": flatten(m, src) for m, src in closure(entries).items()}
    config, model, processor = (
        f"{flat_name(m)}.{cls}" for m, cls in (CONFIG_CLASS, MODEL_CLASS, PROCESSOR_CLASS)
    )
    auto_map = {
        "AutoConfig": config,
        "AutoModelForCausalLM": model,
        "AutoModelForImageTextToText": model,
        "AutoProcessor": processor,
    }
    return RemoteCode(files, auto_map)
