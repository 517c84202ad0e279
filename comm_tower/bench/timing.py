"""Interleaved timing (medians) and peak-memory measurement shared by every benchmark."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile


@dataclass
class Timing:
    """Wall-clock seconds of every timed repeat of one candidate."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        return (max(self.seconds) - min(self.seconds)) / self.median if self.seconds else 0.0


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | None = None,
) -> dict[str, Timing]:
    """Time every function `repeats` times, interleaved (A B C, C B A, ...) so load drifts hit all alike."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out = {name: Timing(name) for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            out[name].seconds.append(time.perf_counter() - start)
    return out


def paired_ratio(candidate: Timing, baseline: Timing) -> float:
    """Median over repeats of candidate/baseline for the same repeat (robust to slow drifts in load)."""
    return statistics.median(c / b for c, b in zip(candidate.seconds, baseline.seconds))


def _cpu_peak_mib(fn: Callable[[], object]) -> float:
    """Peak of (bytes allocated - bytes freed) by the CPU allocator during `fn`, from profiler events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        if str(e.device_type()).endswith("CPU"):
            live += e.nbytes()
            peak = max(peak, live)
    return peak / 2**20


def peak_memory_mib(fn: Callable[[], object], device: torch.device | None = None) -> float:
    """Peak tensor memory one call adds above what is live before it (MiB).

    CUDA: `max_memory_allocated`. CPU: the allocator's allocation and free events recorded by the torch
    profiler (exact tensor bytes, independent of how malloc hands memory back to the system).
    """
    gc.collect()
    if device is not None and device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return _cpu_peak_mib(fn)
