"""The load-memory benchmark: each mode in a fresh process, weights' bytes, logits against the first mode."""

from __future__ import annotations

import json
from pathlib import Path

from comm_tower.bench import load_memory
from comm_tower.bench.__main__ import main
from comm_tower.bench.report import Row


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


def test_each_figure_is_fitted_over_the_depths_and_extrapolated():
    """The fit row of a mode measured at 1, 3 and 5 layers: least-squares line, evaluated at 32 layers."""
    measured = {1: 100.0, 3: 130.0, 5: 170.0}  # peak MiB; the other figures are multiples of it
    rows = [
        Row("load_memory", f"tiny-{n}L", "4bit", 1, 1.0, 0.0, extra=_figures(n, peak))
        for n, peak in measured.items()
    ]
    rows.append(
        Row("load_memory", "tiny-1L", "fp32", 1, 1.0, 0.0, extra=_figures(1, 50.0))
    )  # one depth: no fit
    (fit,) = load_memory.extrapolate(rows, 32, "tiny")
    slope = (170.0 - 100.0) / 4  # least squares over depths symmetric about 3: the end points' slope
    intercept = sum(measured.values()) / 3 - slope * 3
    assert (fit.name, fit.size, fit.extra["llm_layers"]) == ("4bit", "tiny-32L (fit)", 32)
    assert fit.extra["fitted_over_layers"] == [1, 3, 5] and fit.extra["largest_file_mib"] == 5
    for key, scale in (("peak_load_mib", 1), ("peak_anon_mib", 0.5), ("weights_mib", 0.25)):
        assert abs(fit.extra[f"{key}_per_layer"] - scale * slope) < 1e-9
        assert abs(fit.extra[key] - scale * (intercept + 32 * slope)) < 1e-9
    assert fit.peak_mib == fit.extra["peak_load_mib"]


def _figures(layers: int, peak: float) -> dict:
    fitted = {"peak_load_mib": peak, "peak_anon_mib": peak / 2, "peak_file_mib": peak / 2}
    fitted.update(anon_after_mib=peak / 2, weights_mib=peak / 4)
    return {**fitted, "llm_layers": layers, "largest_file_mib": layers}
