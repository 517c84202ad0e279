"""`bash scripts/gpu_check.sh --dry-run`: the GPU check's code end to end on the CPU with tiny shapes, so the
script a GPU run depends on cannot rot; its table and JSON agree with each other and with the rows' timings."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from comm_tower.bench.gpu_check import PEAK_TFLOPS, table_peak_tflops
from comm_tower.bench.preflight import OPTIONAL, missing

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out-dir", str(out)],
        cwd=out,  # the script finds the package from its own folder, not the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    log = (out / "gpu_check.log").read_text()
    printed = proc.stdout[proc.stdout.index("Hardware:") : proc.stdout.index("wrote ")].strip()
    assert printed in log  # the printed table is in the log too
    return proc.stdout, json.loads((out / "gpu_check.json").read_text())


def _row(doc: dict, bench: str, name: str, **extra: str) -> dict:
    hits = [
        r
        for r in doc["rows"]
        if r["bench"] == bench and r["name"] == name and all(r["extra"].get(k) == v for k, v in extra.items())
    ]
    assert len(hits) == 1, (bench, name, extra)
    return hits[0]


def test_dry_run_prints_every_measure_of_the_gpu_table(dry_run):
    stdout, doc = dry_run
    assert doc["meta"]["dry_run"] and "gpu" not in doc["meta"]["hardware"]
    assert doc["meta"]["missing_packages"] == missing(OPTIONAL)
    for measure in (
        "| tower images/s, batch 2 |",
        "| tower share of measured gemm",
        "| MFM fwd+bwd ms, batch 2 |",
        "| train step tokens/s",
        "| chat chat_4bit first token ms",
        "| chat chat_4bit tokens/s",
        "| chat chat_4bit peak MiB",
    ):
        assert measure in stdout, measure
    assert set(doc["meta"]["seconds"]) == {"tower", "projector", "train_step", "chat", "total"}


def test_figures_follow_from_the_timed_repeats(dry_run):
    stdout, doc = dry_run
    comm, bare = _row(doc, "tower_forward", "comm_tower"), _row(doc, "tower_forward", "bare_encoders")
    for r in (comm, bare):
        assert r["median_s"] == pytest.approx(statistics.median(r["extra"]["seconds"]))
        assert r["throughput"] == pytest.approx(2 / r["median_s"])
        gemm = doc["meta"]["peak_tflops"]["measured_gemm"]
        assert r["extra"]["fraction_of_measured_gemm"] == pytest.approx(
            r["extra"]["gflop_per_s"] / 1e3 / gemm
        )
    assert f"| {comm['throughput']:.3g} | bare encoders {bare['throughput']:.3g} |" in stdout
    for tower in ("comm", "clip"):
        step = _row(doc, "train_step", "whole_step", tower=tower)
        assert step["extra"]["tokens_per_s"] == pytest.approx(
            step["extra"]["tokens_per_step"] / step["median_s"]
        )
        assert step["peak_mib"] > 0
        assert step["extra"]["gradient_checkpointing"] and step["extra"]["attention"] == "sdpa"
    # COMM stacks channels, not tokens: the LLM sees as many tokens per step as with the single CLIP layer
    comm_step, clip_step = (_row(doc, "train_step", "whole_step", tower=t) for t in ("comm", "clip"))
    assert comm_step["extra"]["tokens_per_step"] == clip_step["extra"]["tokens_per_step"]
    fp32, q4 = _row(doc, "generation", "chat_fp32"), _row(doc, "generation", "chat_4bit")
    assert "4bit" in q4["extra"]["llm_linear"].lower() and fp32["extra"]["llm_linear"] == "Linear"
    assert q4["ratio"] == pytest.approx(q4["median_s"] / fp32["median_s"])


def test_peak_table_picks_the_most_specific_gpu_name():
    assert table_peak_tflops("NVIDIA H100 PCIe") == PEAK_TFLOPS["H100 PCIe"]
    assert table_peak_tflops("NVIDIA H100 80GB HBM3") == PEAK_TFLOPS["H100"]
    assert table_peak_tflops("NVIDIA L40S") == PEAK_TFLOPS["L40S"]
    assert table_peak_tflops("NVIDIA H200") == PEAK_TFLOPS["H200"]
    assert table_peak_tflops("NVIDIA A10G") == PEAK_TFLOPS["A10G"]
    assert table_peak_tflops("Some Future GPU") is None


def test_preflight_names_each_missing_package_and_fails_only_for_required(monkeypatch, capsys):
    from comm_tower.bench import preflight

    monkeypatch.setattr(preflight, "REQUIRED", {"torch": "torch"})
    monkeypatch.setattr(preflight, "OPTIONAL", {"comm_tower_no_such_optional": "a reason"})
    assert preflight.main() == 0
    assert (
        "optional package 'comm_tower_no_such_optional' is not installed: a reason" in capsys.readouterr().err
    )
    monkeypatch.setattr(preflight, "REQUIRED", {"comm_tower_no_such_module": "no-such-dist"})
    assert preflight.main() == 2
    assert "required package 'no-such-dist' (import comm_tower_no_such_module)" in capsys.readouterr().err


def test_a_failed_part_is_reported_and_the_run_exits_nonzero(monkeypatch, tmp_path, capsys):
    from comm_tower.bench import gpu_check

    def broken(plan, root):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setitem(gpu_check.PARTS, "chat", broken)
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--dry-run", "--parts", "chat", "--out-dir", str(tmp_path)])
    assert stop.value.code == 1
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["meta"]["errors"] == {"chat": "RuntimeError: CUDA out of memory (simulated)"}
    assert "| chat | FAILED: RuntimeError: CUDA out of memory (simulated) |" in capsys.readouterr().out


def test_table_says_when_4bit_chat_could_not_run():
    from comm_tower.bench.gpu_check import summary
    from comm_tower.bench.report import Row

    fp16 = Row("generation", "large+llm8x4096", "chat_fp16", 1, 2.0, 0.0, 32.0, "tok/s", 100.0)
    fp16.extra = {"first_token_s": 0.1}
    text = summary([fp16], {}, {"bitsandbytes": "the 4-bit chat rows"})
    assert "| chat 4-bit | not run: bitsandbytes is not installed | chat_fp16 | - |" in text
