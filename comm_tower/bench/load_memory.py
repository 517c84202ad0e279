"""Peak memory of loading a COMM checkpoint in fp32 / fp16 / bf16 / 8-bit / 4-bit, each mode in a fresh process.

Per mode: load time, peak resident memory during the load and after one forward pass above the process's
memory after imports (Linux VmHWM, reset through /proc/self/clear_refs; ru_maxrss where that is not
possible), the peaks of anonymous memory (what the process holds) and of file-backed pages (the memory-mapped
checkpoint, which the kernel can drop) during the load, sampled by a thread, both after the load, bytes held
by the weights, the largest checkpoint file, peak CUDA memory, and how far the next-token logits are from the
first mode's. Python-level tracers such as tracemalloc do not see tensor memory, so the numbers come from the
OS and torch. Over checkpoints of several LLM depths, `extrapolate` fits each figure linearly in the depth.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from comm_tower.bench.report import Row

MODES: dict[str, dict[str, Any]] = {
    "fp32": {"dtype": "float32"},
    "fp16": {"dtype": "float16"},
    "bf16": {"dtype": "bfloat16"},
    "8bit": {"load_8bit": True},
    "4bit": {"load_4bit": True},
}
_MARK = "LOAD_MEMORY "
logger = logging.getLogger(__name__)


def _status_kib(field: str) -> int | None:
    """A `/proc/self/status` field (VmRSS, VmHWM, RssAnon) in KiB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_kib(exact: bool) -> int:
    """Peak resident memory so far: VmHWM when it could be reset, else ru_maxrss."""
    return (_status_kib("VmHWM") or 0) if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class RssSampler:
    """Peaks of anonymous, file-backed and total resident memory (KiB), sampled by a thread while active."""

    FIELDS = ("RssAnon", "RssFile", "VmRSS")

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.peak = dict.fromkeys(self.FIELDS, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """Read the fields once and raise the peaks."""
        for field in self.FIELDS:
            self.peak[field] = max(self.peak[field], _status_kib(field) or 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def largest_file_bytes(folder: str) -> int:
    """The largest weights file (`*.safetensors` / `*.bin`) directly in `folder`: one shard of the checkpoint."""
    sizes = [f.stat().st_size for f in Path(folder).iterdir() if f.suffix in (".safetensors", ".bin")]
    return max(sizes, default=0)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer (packed 4-bit / int8 storage counted as stored)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.data_ptr(), t.nbytes)
        if key not in seen:
            seen.add(key)
            total += t.nbytes
    return total


def measure(model_path: str, model_base: str | None, mode: str, device: str, logits_out: Path) -> dict:
    """Load once in this process, run one forward pass, save the next-token logits; the measurements."""
    from comm_tower.inference.loading import load_pretrained_model, part_dtypes

    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    exact = _reset_peak()
    base, base_anon, base_file = (_status_kib(f) or 0 for f in ("VmRSS", "RssAnon", "RssFile"))
    start = time.perf_counter()
    with RssSampler() as sampler:
        tokenizer, model, processor, _ = load_pretrained_model(
            model_path, model_base, device=device, **MODES[mode]
        )
    seconds = time.perf_counter() - start
    peak_load = _peak_kib(exact)
    anon, file = _status_kib("RssAnon") or 0, _status_kib("RssFile") or 0
    size = processor.crop_size["height"]
    ids = torch.tensor([[tokenizer.bos_token_id or 1, -200, *range(5, 25)]], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids, images=torch.rand(1, 3, size, size)).logits[0, -1].float().cpu()
    peak_forward = _peak_kib(exact)
    torch.save(logits, logits_out)
    return {
        "mode": mode,
        "load_s": seconds,
        "peak_exact": exact,
        "peak_load_mib": (peak_load - base) / 1024,
        "peak_forward_mib": (peak_forward - base) / 1024,
        "peak_anon_mib": (sampler.peak["RssAnon"] - base_anon) / 1024,
        "peak_file_mib": (sampler.peak["RssFile"] - base_file) / 1024,
        "anon_after_mib": (anon - base_anon) / 1024,
        "file_after_mib": (file - base_file) / 1024,
        "weights_mib": weight_bytes(model) / 2**20,
        "largest_file_mib": largest_file_bytes(model_path) / 2**20,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None,
        "llm_layers": model.config.text_config.num_hidden_layers,
        "parts": part_dtypes(model),
    }


def _child_env(threads: int) -> dict[str, str]:
    """This process's environment, with the folder this comm_tower came from first on PYTHONPATH."""
    import comm_tower

    source = str(Path(comm_tower.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads)}


def _in_child(
    model_path: str, model_base: str | None, mode: str, device: str, work: Path, threads: int
) -> dict:
    cmd = [sys.executable, "-m", __name__, "--model-path", model_path, "--mode", mode, "--device", device]
    cmd += ["--logits-out", str(work / f"{mode}.pt"), *(["--model-base", model_base] if model_base else [])]
    run = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(threads))
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith(_MARK)), None)
    if run.returncode or line is None:
        raise RuntimeError(f"loading {model_path} as {mode} failed:\n{run.stderr[-2000:]}")
    return json.loads(line[len(_MARK) :])


def run(
    model_path: str,
    size: str,
    modes: list[str],
    work: Path,
    model_base: str | None = None,
    device: str = "cpu",
    threads: int = 1,
) -> list[Row]:
    """Each mode in its own process; memory ratios and logits compared against the first mode."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"load modes {unknown or modes}: choose from {list(MODES)}")
    results = []
    for mode in modes:
        results.append(_in_child(model_path, model_base, mode, device, work, threads))
        logger.info("%s as %s: %s", size, mode, json.dumps(results[-1]))
    ref = results[0]
    ref_logits = torch.load(work / f"{ref['mode']}.pt")
    rows = []
    for r in results:
        logits = torch.load(work / f"{r['mode']}.pt")
        rel = ((logits - ref_logits).abs().max() / ref_logits.abs().max()).item()
        cos = torch.nn.functional.cosine_similarity(logits, ref_logits, dim=0).item()
        first = r is ref
        rows.append(
            Row(
                bench="load_memory",
                size=size,
                name=r["mode"],
                batch=1,
                median_s=r["load_s"],
                spread=0.0,
                peak_mib=r["peak_load_mib"],
                vs=None if first else ref["mode"],
                ratio=None if first else r["peak_load_mib"] / ref["peak_load_mib"],
                extra={**r, "logits_rel_diff": rel, "logits_cosine": cos, "reference": ref["mode"]},
            )
        )
    return rows


FITTED = ("peak_load_mib", "peak_anon_mib", "peak_file_mib", "anon_after_mib", "weights_mib")


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope of ys over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def extrapolate(rows: list[Row], to_layers: int, size: str) -> list[Row]:
    """Per mode measured at two or more LLM depths: each figure in `FITTED` fitted as a line in the depth
    (per-layer slope in `extra`), evaluated at `to_layers`."""
    out = []
    for mode in dict.fromkeys(r.name for r in rows):
        measured = [r for r in rows if r.name == mode]
        depths = [float(r.extra["llm_layers"]) for r in measured]
        if len(set(depths)) < 2:
            continue
        extra: dict[str, Any] = {"fitted_over_layers": sorted(int(d) for d in set(depths))}
        for key in FITTED:
            intercept, slope = _line(depths, [r.extra[key] for r in measured])
            extra[key] = intercept + slope * to_layers
            extra[f"{key}_per_layer"] = slope
        extra["llm_layers"] = to_layers
        extra["largest_file_mib"] = max(r.extra["largest_file_mib"] for r in measured)
        out.append(
            Row(
                bench="load_memory",
                size=f"{size}-{to_layers}L (fit)",
                name=mode,
                batch=1,
                median_s=0.0,
                spread=0.0,
                peak_mib=extra["peak_load_mib"],
                extra=extra,
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """One load in this process (started by `run`); prints the measurements as one JSON line."""
    p = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n")[0])
    p.add_argument("--model-path", required=True)
    p.add_argument("--model-base", default=None)
    p.add_argument("--mode", required=True, choices=list(MODES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--logits-out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = measure(args.model_path, args.model_base, args.mode, args.device, args.logits_out)
    print(_MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
