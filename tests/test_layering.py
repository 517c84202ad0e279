"""The package's layers: each part of comm_tower imports only from its own floor or below.

Read from the source with `ast`, so a lazy import inside a function counts as much as one at the top. The one
upward read allowed is `spec.py` looking up valid names in the registries of the parts that build each field
(the registries are the source of truth for names; the spec is validated against them, lazily).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "comm_tower"

# floor of each top-level module or sub-package of comm_tower; a floor may import floors below it
FLOORS: dict[str, int] = {
    **dict.fromkeys(("constants", "errors", "registry", "spec"), 0),
    **dict.fromkeys(("encoders", "processor", "fusion"), 1),
    **dict.fromkeys(("tower", "zoo", "builders"), 2),
    "data": 3,
    "model": 4,
    "inference": 5,
    **dict.fromkeys(("train", "serve", "eval", "hub"), 6),
    **dict.fromkeys(("demo", "bench"), 7),
}
# siblings on these floors are separate front ends: none reaches into another
SEPARATE_FLOORS = (6, 7)
# (part, part it may read lazily, inside a function): the spec's validation reads the registries
LAZY_REGISTRY_READS = {("spec", "encoders"), ("spec", "fusion"), ("spec", "tower")}


def _part(module: str) -> str | None:
    """`comm_tower.serve.cli` -> 'serve'; `comm_tower` itself (the lazy re-exports) -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "comm_tower" and len(parts) > 1 else None


def _run_at_import(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run when the module is imported: the body and its if/try/with blocks, not functions,
    classes or `if TYPE_CHECKING:` blocks."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            for block in blocks:
                out += _run_at_import(block)
    return out


def _imports(top_level_only: bool = False) -> dict[str, set[tuple[str, str, bool]]]:
    """part -> {(imported part, 'file:line', lazy)} for every import of another part of comm_tower."""
    found: dict[str, set[tuple[str, str, bool]]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent)
        me = _part(".".join(rel.with_suffix("").parts))
        if me is None or me == "__init__":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(node) for node in _run_at_import(tree.body)}
        for node in ast.walk(tree):
            lazy = id(node) not in top
            if lazy and top_level_only:
                continue
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                target = _part(name)
                if target and target != me:
                    found[me].add((target, f"{rel}:{node.lineno}", lazy))
    return found


def test_every_part_has_a_floor() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    unknown = sorted((modules | folders) - set(FLOORS))
    assert not unknown, f"give these a floor in FLOORS: {unknown}"


@pytest.mark.parametrize("part", sorted(FLOORS))
def test_imports_go_down_only(part: str) -> None:
    bad = []
    for target, where, lazy in sorted(_imports().get(part, ())):
        if lazy and (part, target) in LAZY_REGISTRY_READS:
            continue
        up = FLOORS[target] > FLOORS[part]
        sideways = FLOORS[target] == FLOORS[part] and FLOORS[part] in SEPARATE_FLOORS
        if up or sideways:
            bad.append(
                f"{where} imports comm_tower.{target} (floor {FLOORS[target]} from floor {FLOORS[part]})"
            )
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_parts() -> None:
    """Module-level imports only: a cycle there breaks `import`; lazy reads run after every import finished."""
    graph = {part: {t for t, _, _ in edges} for part, edges in _imports(top_level_only=True).items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for part in sorted(graph):
        if part not in state:
            visit(part, [])
