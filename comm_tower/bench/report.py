"""Result rows, acceptance checks, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from comm_tower.bench.timing import Timing, paired_ratio


@dataclass
class Row:
    """One measured candidate: its median time, throughput, peak memory and ratio to its baseline."""

    bench: str
    size: str
    name: str
    batch: int
    median_s: float
    spread: float
    throughput: float | None = None
    unit: str = ""
    peak_mib: float | None = None
    vs: str | None = None
    ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def image_row(
    bench: str,
    size: str,
    batch: int,
    t: Timing,
    peak_mib: float,
    baseline: Timing | None,
    extra: dict[str, Any],
) -> Row:
    """A timed candidate over `batch` images: median, spread, img/s, peak and the paired ratio to `baseline`."""
    return Row(
        bench=bench,
        size=size,
        name=t.name,
        batch=batch,
        median_s=t.median,
        spread=t.spread,
        throughput=batch / t.median,
        unit="img/s",
        peak_mib=peak_mib,
        vs=baseline.name if baseline is not None else None,
        ratio=paired_ratio(t, baseline) if baseline is not None else None,
        extra={**extra, "seconds": t.seconds},
    )


@dataclass
class Check:
    """An acceptance bound on a ratio."""

    name: str
    ratio: float
    bound: float

    @property
    def passed(self) -> bool:
        """True when the measured ratio is within the bound."""
        return self.ratio <= self.bound


def hardware() -> dict[str, Any]:
    """CPU model, cores, torch threads, GPU name: the label every table carries."""
    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), model)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model,
        "cpu_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def note(row: Row) -> str:
    """The row's most telling extra: tokens/s, logits drift, a part's share, first-token latency, FLOP rate."""
    e = row.extra
    if "tokens_per_s" in e:
        return f"{e['tokens_per_s']:.3g} tok/s ({e['tokens_per_step']} per step), stage {e['stage']}"
    if "peak_anon_mib" in e:
        return _memory_note(e)
    if "share" in e:
        return f"{e['share']:.0%} of step"
    if "first_token_s" in e:
        decode = e.get("decode_tok_per_s")
        return f"first token {e['first_token_s'] * 1e3:.0f} ms, decode {_fmt(decode)} tok/s"
    if "gflop_per_s" in e:
        return f"{e['gflop_per_s']:.3g} GFLOP/s"
    if e.get("mfm_share_of_projector"):
        return f"MFM is {e['mfm_share_of_projector']:.0%} of it"
    return ""


def _memory_note(e: dict[str, Any]) -> str:
    """A load's peaks (anonymous / file-backed), what it holds after, its largest file, and its logits drift."""
    text = (
        f"{e['llm_layers']} LLM layers; peak anon {e['peak_anon_mib']:.0f} / file {e['peak_file_mib']:.0f} MiB, "
        f"anon after {e['anon_after_mib']:.0f}, weights {e['weights_mib']:.0f}, largest file "
        f"{e['largest_file_mib']:.0f}"
    )
    if "peak_anon_mib_per_layer" in e:
        return (
            f"{text}; per layer: peak {e['peak_load_mib_per_layer']:.0f}, anon {e['peak_anon_mib_per_layer']:.0f}, "
            f"anon after {e['anon_after_mib_per_layer']:.0f} (fit over {e['fitted_over_layers']})"
        )
    if "logits_cosine" in e:
        text += f"; logits vs {e['reference']}: cosine {e['logits_cosine']:.4f}"
        text += f", max|d|/max|l| {e['logits_rel_diff']:.3g}"
    return text


def table(rows: list[Row]) -> str:
    """A GitHub-markdown table of every row."""
    head = "| bench | size | candidate | batch | median ms | spread | throughput | peak MiB | ratio | vs | note |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        thr = "-" if r.throughput is None else f"{r.throughput:.3g} {r.unit}"
        lines.append(
            f"| {r.bench} | {r.size} | {r.name} | {r.batch} | {r.median_s * 1e3:.4g} | {r.spread:.0%} | "
            f"{thr} | {_fmt(r.peak_mib, 4)} | {_fmt(r.ratio)} | {r.vs or '-'} | {note(r)} |"
        )
    return "\n".join(lines)


def checks_text(checks: list[Check]) -> str:
    """One line per acceptance bound."""
    return "\n".join(
        f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.ratio:.3f} (bound {c.bound})" for c in checks
    )


def write_json(path: Path, rows: list[Row], checks: list[Check], meta: dict[str, Any]) -> None:
    """Rows, checks and run metadata as one JSON document."""
    doc = {
        "meta": meta,
        "rows": [asdict(r) for r in rows],
        "checks": [{**asdict(c), "passed": c.passed} for c in checks],
    }
    path.write_text(json.dumps(doc, indent=1))
