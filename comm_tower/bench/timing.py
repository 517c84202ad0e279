"""Interleaved timing (medians) and peak-memory measurement shared by every benchmark."""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


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


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def return_freed_memory_to_os() -> bool:
    """Make glibc hand large freed blocks back at once, so resident memory follows live tensors."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 16)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 16)
    return True


def _rss_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib(fn: Callable[[], object], device: torch.device | None = None) -> float | None:
    """Peak memory one call adds above what is live before it (MiB); None where it cannot be measured.

    CUDA: `max_memory_allocated`. CPU: the peak resident set (Linux `VmHWM`, reset through
    `/proc/self/clear_refs`) minus the resident set before the call.
    """
    gc.collect()
    if device is not None and device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    before = _rss_kib("VmRSS")
    if before is None or not _reset_peak_rss():
        return None
    fn()
    peak = _rss_kib("VmHWM")
    return None if peak is None else max(peak - before, 0) / 1024
