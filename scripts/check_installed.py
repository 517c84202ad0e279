"""Checks an installed comm-tower (wheel or sdist, not the source tree): imports, console scripts, a tiny tower.

Run by scripts/test_wheel.sh with the fresh venv's python, from a folder outside the source tree.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

DIST = "comm-tower"
PACKAGES = ("comm_tower", "llava_patch")
# modules whose import needs an extra that a plain install does not bring, and the package it needs;
# every other module must import
NEEDS_EXTRA = {
    # the `lmms` extra: lmms-eval's own pins replace torch / transformers (tested by scripts/test_lmms.sh)
    "comm_tower.eval.lmms_plugin": "lmms_eval",
}


def check_installed_location() -> Path:
    """The package must come from this venv's site-packages, not from a source checkout."""
    import comm_tower

    where = Path(comm_tower.__file__).resolve()
    if Path(sys.prefix).resolve() not in where.parents:
        raise SystemExit(f"comm_tower imported from {where}, not from the venv {sys.prefix}")
    print(f"comm_tower from {where.parent}")
    return where.parent


def import_every_module() -> None:
    """Import each module of the shipped packages (`__main__` modules excepted: they run on import)."""
    names: list[str] = []
    for top in PACKAGES:
        pkg = importlib.import_module(top)
        names.append(top)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{top}.")]
    skipped = []
    for name in sorted(n for n in names if not n.endswith(".__main__")):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if NEEDS_EXTRA.get(name) != (err.name or "").split(".")[0]:
                raise SystemExit(f"import {name} failed: {err}") from None
            skipped.append(f"{name} (needs {err.name})")
    print(f"imported {len(names) - len(skipped)} modules; skipped {len(skipped)}: {', '.join(skipped)}")


def run_console_scripts() -> None:
    """`--help` of every console script the installed distribution declares; `comm-presets` lists presets."""
    scripts = [
        ep for ep in importlib.metadata.distribution(DIST).entry_points if ep.group == "console_scripts"
    ]
    if not scripts:
        raise SystemExit(f"{DIST} declares no console scripts")
    bindir = Path(sys.executable).parent
    for ep in scripts:
        run = subprocess.run([str(bindir / ep.name), "--help"], capture_output=True, text=True)
        if run.returncode != 0 or "usage" not in run.stdout.lower():
            raise SystemExit(
                f"{ep.name} --help: exit {run.returncode}\n{run.stdout[-800:]}{run.stderr[-2000:]}"
            )
    print(f"--help works for {len(scripts)} console scripts: {', '.join(sorted(ep.name for ep in scripts))}")
    listed = subprocess.run([str(bindir / "comm-presets")], capture_output=True, text=True, check=True).stdout
    names = set(listed.split())
    if not {"comm", "tiny-comm", "clip", "dinov2"} <= names:
        raise SystemExit(f"comm-presets lists no shipped presets:\n{listed}")
    print(f"comm-presets lists {len([n for n in listed.splitlines() if n.strip()])} lines")


def check_presets_are_package_data(installed: Path) -> None:
    """Presets are read from the installed package data."""
    from comm_tower.zoo import preset_dirs

    dirs = preset_dirs()
    if not dirs or any(installed not in d.resolve().parents for d in dirs):
        raise SystemExit(f"presets found outside the installed package: {dirs}")


def run_tiny_tower() -> None:
    """Build the tiny COMM tower + projector on random weights and check a forward pass's shapes."""
    import torch

    from comm_tower import build_vision_projector, build_vision_tower, load_pretrained_model
    from comm_tower.zoo.tiny import IMAGE, PATCH, ensure_tiny_encoders

    assert callable(load_pretrained_model)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COMM_TINY_DIR"] = tmp
        ensure_tiny_encoders(Path(tmp))
        cfg = SimpleNamespace(mm_vision_tower="tiny-comm", mm_projector_type="mlp2x_gelu", hidden_size=16)
        tower = build_vision_tower(cfg)
        cfg.mm_hidden_size = tower.hidden_size
        projector = build_vision_projector(cfg)
        with torch.no_grad():
            feats = tower(torch.rand(2, 3, IMAGE, IMAGE))
            out = projector(feats)
    tokens = (IMAGE // PATCH) ** 2
    if feats.shape != (2, tokens, tower.hidden_size) or out.shape != (2, tokens, 16):
        raise SystemExit(f"tiny tower: features {tuple(feats.shape)}, projected {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise SystemExit("tiny tower: non-finite projector output")
    print(f"tiny COMM tower + projector: {tuple(feats.shape)} -> {tuple(out.shape)}")


def main() -> None:
    """Every check, in order; the first failure exits non-zero with its reason."""
    installed = check_installed_location()
    import_every_module()
    check_presets_are_package_data(installed)
    run_console_scripts()
    run_tiny_tower()
    print("installed package OK")


if __name__ == "__main__":
    main()
