"""Shared fixtures: tiny random encoders built once per test session in a temp folder (no hub access)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
