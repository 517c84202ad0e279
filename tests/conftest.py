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
