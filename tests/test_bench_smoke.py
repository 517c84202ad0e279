"""`python -m comm_tower.bench` at the tiny size: every benchmark runs, the table and the JSON have the fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comm_tower.bench.__main__ import main
from comm_tower.bench.timing import interleaved, paired_ratio, peak_memory_mib


def test_tiny_benchmark_prints_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "bench.json"
    argv = [
        "--sizes",
        "tiny",
        "--tiny-repeats",
        "1",
        "--new-tokens",
        "3",
        "--weights-dir",
        str(tmp_path / "w"),
    ]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Hardware:" in printed and "| bench | size | candidate |" in printed
    doc = json.loads(out.read_text())
    assert doc["meta"]["hardware"]["cpu_cores"] >= 1 and "--sizes tiny" in doc["meta"]["command"]
    names = {(r["bench"], r["name"]) for r in doc["rows"]}
    expected = {
        ("tower_forward", "comm_tower"),
        ("tower_forward", "bare_encoders"),
        ("tower_forward", "hidden_states_reference"),
        ("projector_fwd_bwd", "comm_mfm"),
        ("projector_fwd_bwd", "dense_linear_equal_macs"),
        ("projector_fwd_bwd", "mfm_per_layer_loop"),
        ("projector_fwd_bwd", "comm_projector_full"),
        ("train_step", "whole_step"),
        ("generation", "chat_fp32"),
        ("generation", "chat_4bit"),
    } | {("train_step", f"part:{p}") for p in ("tower", "projector", "llm_forward", "backward", "optimizer")}
    assert expected <= names
    for r in doc["rows"]:
        assert r["median_s"] > 0 and r["size"] == "tiny", r
        if r["vs"] is not None:
            assert r["ratio"] > 0, r
        assert r["name"] in printed
    shares = next(r for r in doc["rows"] if r["name"] == "whole_step")["extra"]["shares"]
    assert abs(sum(shares.values()) - 1) < 1e-6
    tower = {r["name"]: r for r in doc["rows"] if r["bench"] == "tower_forward"}
    assert tower["comm_tower"]["throughput"] == pytest.approx(4 / tower["comm_tower"]["median_s"])
    assert tower["comm_tower"]["extra"]["attention"] == ["sdpa"]
    gen = {r["name"]: r for r in doc["rows"] if r["bench"] == "generation"}
    assert (
        gen["chat_4bit"]["extra"]["llm_linear"] == "Linear4bit"
        and gen["chat_fp32"]["extra"]["llm_linear"] == "Linear"
    )
    assert doc["checks"] == []  # the acceptance bounds apply to the base size only


def test_interleaving_alternates_order_and_pairs_repeats():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved(fns, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert len(times["a"].seconds) == 3
    times["a"].seconds, times["b"].seconds = [2.0, 9.0, 3.0], [1.0, 3.0, 1.0]
    assert paired_ratio(times["a"], times["b"]) == 3.0


def test_peak_memory_counts_live_tensors_not_freed_ones():
    def two_temporaries() -> None:
        a = torch.ones(64, 2**20)  # 256 MiB
        b = a * 2  # +256 MiB while a is alive
        del a, b
        torch.ones(32, 2**20).sum()  # 128 MiB after both are gone

    assert peak_memory_mib(two_temporaries) == pytest.approx(512, abs=1)


def test_busy_cpu_is_detected_and_warned_about():
    import subprocess
    import sys

    from comm_tower.bench.__main__ import _busy_warning, _cpu_busy

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = _cpu_busy(0.5)
    finally:
        spin.kill()
    cores = len(__import__("os").sched_getaffinity(0))
    assert busy is not None and busy >= 0.8 / cores  # one spinning process keeps one core busy
    assert _busy_warning(0.1) is None
    assert "60%" in (_busy_warning(0.6) or "")
