"""What `setup.py` ships: every source folder holding Python files is a package, the presets are package data."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import runpy
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import setuptools

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = ("comm_tower", "llava_patch")


@pytest.fixture(scope="module")
def setup_kwargs() -> dict[str, Any]:
    """The keyword arguments setup.py passes to `setuptools.setup` (captured, nothing is built)."""
    captured: dict[str, Any] = {}
    cwd = os.getcwd()
    os.chdir(ROOT)  # find_packages looks in the working directory
    try:
        with mock.patch.object(setuptools, "setup", lambda **kw: captured.update(kw)):
            runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    finally:
        os.chdir(cwd)
    return captured


def _python_folders() -> set[str]:
    """Dotted names of every folder under the source roots that holds a .py file (walked on disk)."""
    out = set()
    for top in SOURCE_ROOTS:
        for folder, _, files in os.walk(ROOT / top):
            if "__pycache__" not in folder and any(f.endswith(".py") for f in files):
                out.add(".".join(Path(folder).relative_to(ROOT).parts))
    return out


def test_every_folder_with_python_files_is_a_package(setup_kwargs: dict[str, Any]):
    missing = sorted(_python_folders() - set(setup_kwargs["packages"]))
    assert not missing, f"setup.py ships no package for {missing}: add an __init__.py to each"


def test_presets_ship_as_package_data(setup_kwargs: dict[str, Any]):
    pkg = "comm_tower.zoo.presets"
    assert pkg in setup_kwargs["packages"]
    folder = ROOT / setup_kwargs["package_dir"][pkg]
    presets = sorted(p.name for p in folder.glob("*.json"))
    assert "comm.json" in presets and "tiny-comm.json" in presets
    patterns = setup_kwargs["package_data"][pkg]
    assert all(any(fnmatch.fnmatch(name, pat) for pat in patterns) for name in presets)


def test_every_console_script_points_at_a_function(setup_kwargs: dict[str, Any]):
    scripts = setup_kwargs["entry_points"]["console_scripts"]
    assert scripts
    for line in scripts:
        name, target = (s.strip() for s in line.split("="))
        module, func = target.split(":")
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, f"{name}: no module {module}"
        assert f"def {func}(" in Path(spec.origin).read_text(), f"{name}: {module} defines no {func}()"
        assert module.rsplit(".", 1)[0] in setup_kwargs["packages"], f"{name}: {module} is not shipped"


def test_every_top_level_export_resolves():
    import comm_tower
    from comm_tower.inference.loading import load_pretrained_model

    assert comm_tower.load_pretrained_model is load_pretrained_model
    for name in comm_tower.__all__:
        assert getattr(comm_tower, name) is not None, name
