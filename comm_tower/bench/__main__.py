"""`comm-bench`: tower, projector, training-step, generation and load-memory benchmarks in one table + JSON."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
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
    """Load modes of `size`'s random checkpoint, or of `--model-path` (size None), each in a fresh process."""
    from comm_tower.bench.llm import save_checkpoint

    if size is None:
        path, label = args.model_path, Path(args.model_path).name
    else:
        path, label = str(save_checkpoint(size, root / size.name / "comm.json", root)), size.name
    modes = [m.strip() for m in args.load_modes.split(",") if m.strip()]
    work = root / label / "load_memory"
    work.mkdir(parents=True, exist_ok=True)
    return load_memory.run(path, label, modes, work, args.model_base, args.device, args.threads)


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
