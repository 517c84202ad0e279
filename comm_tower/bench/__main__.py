"""`comm-bench`: tower, projector, training-step, generation and load-memory benchmarks in one table + JSON."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from comm_tower.bench import generation, load_memory, projector, tower, train_step
from comm_tower.bench.report import Check, Row, checks_text, hardware, table, write_json
from comm_tower.bench.sizes import SIZES, BenchSize, comm_spec
from comm_tower.errors import UsageError, run_command

logger = logging.getLogger("comm_tower.bench")
PARTS = ("tower", "projector", "train_step", "generation", "load_memory")
DEFAULT_PARTS = ("tower", "projector", "train_step", "generation")
BOUNDS = {"tower_forward": ("comm_tower", 1.05), "projector_fwd_bwd": ("comm_mfm", 1.5)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="comm-bench", description=__doc__)
    p.add_argument("--sizes", default="tiny,base", help=f"comma list of {SIZES.names()}")
    p.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma list of {PARTS} (default: all but load_memory)",
    )
    p.add_argument("--batch", type=int, default=4, help="images per batch (tower, projector, training step)")
    p.add_argument("--large-batch", type=int, default=1, help="batch for the 'large' (ViT-L/336) size")
    p.add_argument("--repeats", type=int, default=9, help="timed repeats per candidate (medians reported)")
    p.add_argument("--tiny-repeats", type=int, default=15, help="timed repeats at the tiny size")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per answer")
    p.add_argument("--text-tokens", type=int, default=64, help="text tokens per sample in the training step")
    p.add_argument(
        "--stage",
        type=int,
        default=2,
        choices=[1, 2],
        help="training step: 1 = projector, 2 = projector + LLM",
    )
    p.add_argument(
        "--load-modes", default="fp32,4bit", help=f"load_memory: comma list of {list(load_memory.MODES)}"
    )
    p.add_argument(
        "--model-path", help="load_memory: measure this checkpoint instead of each size's random one"
    )
    p.add_argument("--model-base", help="load_memory: the base LLM of a LoRA or projector-only --model-path")
    p.add_argument(
        "--llm-layers",
        help="load_memory: comma list of LLM depths; each size's checkpoint is built at each depth, saved in "
        "fp16 in --shard-size shards, and every figure is fitted over the depths and extrapolated",
    )
    p.add_argument("--shard-size", default="1GB", help="load_memory with --llm-layers: checkpoint shard size")
    p.add_argument(
        "--extrapolate-layers",
        type=int,
        default=32,
        help="load_memory with --llm-layers: depth to extrapolate to",
    )
    p.add_argument("--skip-generation", action="store_true", help="leave out the generation benchmark")
    p.add_argument("--skip-train-step", action="store_true", help="leave out the training-step benchmark")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="tower and training-step dtype"
    )
    p.add_argument("--weights-dir", type=Path, help="keep random weights here between runs (default: temp)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON output file")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    return p.parse_args(argv)


def _checks(rows: list[Row], batch: int) -> list[Check]:
    out = []
    for r in rows:
        bound = BOUNDS.get(r.bench)
        if bound and r.name == bound[0] and r.ratio is not None and r.size == "base" and r.batch == batch:
            out.append(Check(f"{r.bench} {r.size} batch {r.batch}: {r.name} / {r.vs}", r.ratio, bound[1]))
    return out


def run(args: argparse.Namespace) -> tuple[list[Row], list[Check]]:
    """Every requested benchmark at every requested size."""
    torch.set_num_threads(args.threads)
    sizes = [SIZES.get(s.strip()) for s in args.sizes.split(",") if s.strip()]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise UsageError(f"--parts: unknown {unknown}; choose from {PARTS}")
    if args.skip_generation and "generation" in parts:
        parts.remove("generation")
    if args.skip_train_step and "train_step" in parts:
        parts.remove("train_step")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    root = args.weights_dir or Path(tempfile.mkdtemp(prefix="comm_bench_"))
    rows: list[Row] = []
    try:
        jobs: list[tuple[BenchSize | None, str]] = [(s, p) for s in sizes for p in parts]
        if args.model_path and "load_memory" in parts:  # one given checkpoint: measured once, not per size
            jobs = [j for j in jobs if j[1] != "load_memory"] + [(None, "load_memory")]
        for size, part in tqdm(jobs, desc="benchmarks", disable=None):
            start = time.perf_counter()
            if size is None:
                rows += _load_memory(args, None, root)
                logger.info("%s of %s: %.0f s", part, args.model_path, time.perf_counter() - start)
                continue
            batch = args.large_batch if size.name == "large" else args.batch
            repeats = args.tiny_repeats if size.name == "tiny" else args.repeats
            spec = comm_spec(size, root)
            preset = root / size.name / "comm.json"
            if part == "tower":
                rows += tower.run(spec, size.name, batch, repeats, dtype=dtype, device=device)
            elif part == "projector":
                rows += projector.run(spec, size.name, batch, repeats, size.llm_width, device=device)
            elif part == "train_step":
                from comm_tower.bench.llm import comm_model

                model = comm_model(size, preset, vocab=512 if size.name == "tiny" else None)
                model.to(device=device, dtype=dtype)
                rows += train_step.run(model, size.name, batch, repeats, args.text_tokens, args.stage)
                del model
            elif part == "generation":
                rows += generation.run(size, preset, root, repeats, args.new_tokens)
            elif part == "load_memory":
                rows += _load_memory(args, size, root)
            logger.info("%s at %s: %.0f s", part, size.name, time.perf_counter() - start)
    finally:
        if args.weights_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return rows, _checks(rows, args.batch)


def _load_memory(args: argparse.Namespace, size: BenchSize | None, root: Path) -> list[Row]:
    """Load modes of `size`'s random checkpoint (at each of `--llm-layers`, fitted and extrapolated), or of
    `--model-path` (size None); each load in a fresh process."""
    from comm_tower.bench.llm import save_checkpoint

    modes = [m.strip() for m in args.load_modes.split(",") if m.strip()]

    def measure(path: str, label: str) -> list[Row]:
        work = root / label / "load_memory"
        work.mkdir(parents=True, exist_ok=True)
        return load_memory.run(path, label, modes, work, args.model_base, args.device, args.threads)

    if size is None:
        return measure(args.model_path, Path(args.model_path).name)
    preset = root / size.name / "comm.json"
    if not args.llm_layers:
        return measure(str(save_checkpoint(size, preset, root)), size.name)
    rows: list[Row] = []
    for depth in _depths(args.llm_layers):
        sized = dataclasses.replace(size, llm_layers=depth)
        path = _in_fresh_process(save_checkpoint, sized, preset, root, torch.float16, args.shard_size)
        try:
            rows += measure(str(path), f"{size.name}-{depth}L")
        finally:
            if args.weights_dir is None:  # a 7B-width checkpoint is GBs of disk: one at a time
                shutil.rmtree(path, ignore_errors=True)
    return rows + load_memory.extrapolate(rows, args.extrapolate_layers, size.name)


def _in_fresh_process(build: Callable[..., Path], *args: object) -> Path:
    """`build(*args)` in a spawned process, so that building a GB-sized model leaves none of its memory here."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(build, args)


def _depths(text: str) -> list[int]:
    """`--llm-layers` as positive ints."""
    try:
        depths = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        depths = []
    if not depths or min(depths) < 1:
        raise UsageError(f"--llm-layers {text!r}: give a comma list of positive depths, e.g. 2,6,10")
    return depths


def _cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy during `seconds` before the run (from /proc/stat; None where absent)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(1, total1 - total0)


def _busy_warning(busy: float | None) -> str | None:
    """A warning when other processes already use the CPU: ratios then measure contention, not the code."""
    if busy is None or busy < 0.25:
        return None
    return (
        f"other processes kept {busy:.0%} of the CPUs busy just before the run, so timings and ratios are "
        "unreliable (memory-bound passes slow down more than matmuls); rerun on an idle machine"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `comm-bench`: bad flags stop with one line and exit code 2."""
    return run_command("comm-bench", _main, argv)


def _main(argv: list[str] | None) -> int:
    """Run, print the table and the acceptance checks, write the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    busy_fraction = _cpu_busy()
    busy = _busy_warning(busy_fraction)
    if busy:
        logger.warning(busy)
    rows, checks = run(args)
    hw = hardware()
    if busy_fraction is not None:
        hw["cpu_busy_before_run"] = round(busy_fraction, 2)
    meta = {"hardware": hw, "command": "python -m comm_tower.bench " + " ".join(argv or sys.argv[1:])}
    print(f"Hardware: {hw}")
    print(table(rows))
    if checks:
        print(checks_text(checks))
    if busy:
        print(f"NOTE: {busy}")
    write_json(args.out, rows, checks, meta)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    main()
