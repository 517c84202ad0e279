"""Shared fixtures: tiny random encoders built once per test session in a temp folder (no hub access)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """A command run in-process may point the root logger at this test's captured stream
    (`logging.basicConfig(force=True)`); put the root logger back so later tests never log to a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with tiny CLIP / DINOv2 / SigLIP weights; the tiny presets point at it via COMM_TINY_DIR."""
    from comm_tower.zoo.tiny import ensure_tiny_encoders

    root = Path(os.environ.get("COMM_TEST_TINY_DIR") or tmp_path_factory.mktemp("tiny"))
    os.environ["COMM_TINY_DIR"] = str(root)
    ensure_tiny_encoders(root)
    return root


@pytest.fixture(scope="session")
def llava_runs(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """LLaVA's own train(), stage 1 then stage 2, with a tiny COMM tower (only in .venv-llava; trained once)."""
    from _llava_helpers import train_stages

    return train_stages(tmp_path_factory.mktemp("llava"), tiny_dir)
