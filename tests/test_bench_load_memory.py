"""The load-memory benchmark: each mode in a fresh process, weights' bytes, logits against the first mode."""

from __future__ import annotations

import json
from pathlib import Path

from comm_tower.bench.__main__ import main


def _rows(tmp_path: Path, name: str, argv: list[str]) -> dict[str, dict]:
    out = tmp_path / f"{name}.json"
    assert main([*argv, "--weights-dir", str(tmp_path / "w"), "--out", str(out)]) == 0
    return {r["name"]: r for r in json.loads(out.read_text())["rows"] if r["bench"] == "load_memory"}


def test_modes_of_a_size_and_of_a_given_checkpoint(tmp_path: Path):
    rows = _rows(tmp_path, "size", ["--sizes", "tiny", "--parts", "load_memory", "--load-modes", "fp32,4bit"])
    fp32, q4 = rows["fp32"], rows["4bit"]
    assert fp32["size"] == "tiny" and fp32["vs"] is None and fp32["extra"]["logits_cosine"] > 0.9999
    assert q4["vs"] == "fp32" and q4["ratio"] == q4["peak_mib"] / fp32["peak_mib"]
    assert "4-bit" in q4["extra"]["parts"]["llm"] and "4-bit" not in q4["extra"]["parts"]["tower"]
    assert q4["extra"]["weights_mib"] < fp32["extra"]["weights_mib"] and q4["extra"]["logits_cosine"] > 0.9
    checkpoint = tmp_path / "w" / "tiny" / "chat_model"
    again = _rows(
        tmp_path, "ckpt", ["--parts", "load_memory", "--load-modes", "fp32", "--model-path", str(checkpoint)]
    )
    assert again["fp32"]["size"] == "chat_model"
    assert again["fp32"]["extra"]["weights_mib"] == fp32["extra"]["weights_mib"]
