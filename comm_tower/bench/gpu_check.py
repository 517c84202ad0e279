"""`scripts/gpu_check.sh`: the COMM figures that need a GPU, side by side in one run, one JSON, one log, one table.

On one GPU, in bf16, with the real shapes (CLIP ViT-L/14-336 + DINOv2-L/14, random weights):

- tower: the COMM tower's images/s against its two bare encoders, and its share of the GPU's bf16 peak
  (encoders' FLOPs; peak from `PEAK_TFLOPS` by GPU name and from a measured bf16 GEMM);
- projector: the MFM forward+backward against the dense GEMM with the same multiply-adds;
- train step: tower + projector + a ~1B Llama-shaped random LLM, LLaVA-1.5 stage-2 settings (bf16, SDPA or
  flash-attn, gradient checkpointing, AdamW), tokens/s and peak memory, against the same step with
  LLaVA-1.5's single-layer CLIP tower;
- chat: a 7B-width Llama with `--chat-layers` of its 32 blocks (random, quantised at load) and the COMM
  tower, 4-bit against fp16: first-token latency, tokens/s, peak memory, and those figures scaled to 32 blocks.

`--dry-run` runs the same code on the CPU with the tiny shapes (bf16 as on the GPU; the chat in fp32 and 4-bit
with fp32 compute where the GPU uses fp16) and prints the same table with CPU figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from comm_tower.bench import generation, projector, tower, train_step
from comm_tower.bench.preflight import OPTIONAL, missing
from comm_tower.bench.report import Row, hardware, table
from comm_tower.bench.sizes import SIZES, BenchSize, comm_spec
from comm_tower.bench.timing import interleaved
from comm_tower.errors import UsageError, run_command

logger = logging.getLogger("comm_tower.bench.gpu_check")

# dense bf16 tensor-core peak (TFLOP/s, no sparsity) from the vendors' data sheets, by a substring of the name
PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100": 989.0,  # SXM, named "NVIDIA H100 80GB HBM3"
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,  # fp16 (no bf16 on Volta)
}
CHAT_FULL_LAYERS = 32  # Vicuna-7B / Llama-2-7B


@dataclasses.dataclass(frozen=True)
class Plan:
    """Shapes and settings of one run: the real GPU ones or the tiny CPU ones of `--dry-run`."""

    device: str
    dtype: torch.dtype  # tower, projector, training step
    chat_modes: dict[str, dict[str, Any]]  # generation modes; the first is the baseline
    chat_save_dtype: torch.dtype
    encoders: BenchSize  # its name picks the encoder shapes
    train_llm: BenchSize
    chat_llm: BenchSize
    tower_batch: int
    train_batch: int
    text_tokens: int
    new_tokens: int
    repeats: int
    gemm_size: int


def make_plan(args: argparse.Namespace) -> Plan:
    """The GPU plan, or the tiny CPU plan of `--dry-run`; the flags override batch, repeats and chat depth."""
    if args.dry_run:
        tiny = SIZES.get("tiny")
        return Plan(
            device="cpu",
            dtype=getattr(torch, args.dtype or "bfloat16"),
            chat_modes={
                "fp32": {"dtype": torch.float32},
                "4bit": {"load_4bit": True, "dtype": torch.float32},
            },
            chat_save_dtype=torch.float32,
            encoders=tiny,
            train_llm=dataclasses.replace(tiny, llm_layers=2),
            chat_llm=dataclasses.replace(tiny, llm_layers=args.chat_layers or 2),
            tower_batch=args.batch or 2,
            train_batch=args.train_batch or 2,
            text_tokens=args.text_tokens or 16,
            new_tokens=args.new_tokens or 4,
            repeats=args.repeats or 2,
            gemm_size=256,
        )
    large = SIZES.get("large")
    return Plan(
        device="cuda",
        dtype=getattr(torch, args.dtype or "bfloat16"),
        chat_modes={"fp16": {"dtype": torch.float16}, "4bit": {"load_4bit": True, "dtype": torch.float16}},
        chat_save_dtype=torch.float16,
        encoders=large,
        # width 2048, 22 blocks, MLP 5504, vocab 32000: 1.2B parameters (TinyLlama-1.1B's depth and width)
        train_llm=dataclasses.replace(large, llm_width=2048, llm_layers=22),
        chat_llm=dataclasses.replace(large, llm_width=4096, llm_layers=args.chat_layers or 8),
        tower_batch=args.batch or 32,
        train_batch=args.train_batch or 16,
        text_tokens=args.text_tokens or 512,
        new_tokens=args.new_tokens or 64,
        repeats=args.repeats or 5,
        gemm_size=8192,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (0 = the plan's default)."""
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script end to end")
    p.add_argument("--out-dir", type=Path, default=Path("gpu_check"), help="gpu_check.json and gpu_check.log")
    p.add_argument(
        "--parts", default="tower,projector,train_step,chat", help="comma list of the parts to run"
    )
    p.add_argument("--batch", type=int, default=0, help="tower and projector images (GPU 32, dry run 2)")
    p.add_argument("--train-batch", type=int, default=0, help="training-step samples (GPU 16, dry run 2)")
    p.add_argument("--text-tokens", type=int, default=0, help="text tokens per training sample (GPU 512)")
    p.add_argument("--chat-layers", type=int, default=0, help="7B-width blocks in the chat LLM (GPU 8 of 32)")
    p.add_argument("--new-tokens", type=int, default=0, help="tokens per chat answer (GPU 64)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats (GPU 5, dry run 2)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help="tower/projector/training step (GPU bfloat16)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    return p.parse_args(argv)


def table_peak_tflops(name: str) -> float | None:
    """The data-sheet bf16 peak of a GPU named `name` (longest matching key), or None."""
    hits = [k for k in PEAK_TFLOPS if k.lower() in name.lower()]
    return PEAK_TFLOPS[max(hits, key=len)] if hits else None


def measured_gemm_tflops(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """TFLOP/s of an `n x n x n` matmul in `dtype`: the rate a dense GEMM reaches on this device."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = interleaved({"gemm": lambda: a @ b}, max(repeats, 3), device=device)["gemm"]
    return 2 * n**3 / t.median / 1e12


def _peak_total_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_tower(plan: Plan, root: Path, peaks: dict[str, float | None]) -> list[Row]:
    """COMM tower vs its bare encoders at `tower_batch`, with each row's share of the peak FLOP rate."""
    spec = comm_spec(plan.encoders, root)
    rows = tower.run(
        spec, plan.encoders.name, plan.tower_batch, plan.repeats, plan.dtype, torch.device(plan.device)
    )
    for r in rows:
        for label, tflops in peaks.items():
            if tflops:
                r.extra[f"fraction_of_{label}"] = r.extra["gflop_per_s"] / 1e3 / tflops
    return rows


def run_projector(plan: Plan, root: Path) -> list[Row]:
    """MFM forward+backward vs the dense linear layer with the same multiply-adds."""
    spec = comm_spec(plan.encoders, root)
    return projector.run(
        spec,
        plan.encoders.name,
        plan.tower_batch,
        plan.repeats,
        plan.train_llm.llm_width,
        torch.device(plan.device),
        plan.dtype,
    )


def run_train_step(plan: Plan, root: Path) -> list[Row]:
    """Stage-2 step with the COMM tower and with LLaVA-1.5's CLIP layer, same LLM, batch and text."""
    from comm_tower.bench.llm import comm_model

    device = torch.device(plan.device)
    rows = []
    vocab = 512 if plan.encoders.name == "tiny" else None
    for preset in ("comm", "clip"):
        comm_spec(plan.encoders, root, preset)  # writes root/<size>/<preset>.json
        _reset_peak(device)
        model = comm_model(plan.train_llm, root / plan.encoders.name / f"{preset}.json", vocab=vocab)
        model.to(device=device, dtype=plan.dtype)
        # what the HF Trainer does for --gradient_checkpointing True (LLaVA-1.5's stage-2 setting)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        label = f"{plan.encoders.name}+llm{plan.train_llm.llm_layers}x{plan.train_llm.llm_width}:{preset}"
        part = train_step.run(model, label, plan.train_batch, plan.repeats, plan.text_tokens, stage=2)
        whole = next(r for r in part if r.name == "whole_step")
        whole.extra["tower"] = preset
        whole.extra["llm_params"] = sum(p.numel() for p in model.language_model.parameters())
        whole.extra["attention"] = str(model.language_model.config._attn_implementation)
        whole.extra["gradient_checkpointing"] = bool(
            getattr(model.language_model.model, "gradient_checkpointing", False)
        )
        whole.extra["peak_total_mib"] = _peak_total_mib(device)
        rows += part
        del model
        _reset_peak(device)
    return rows


def run_chat(plan: Plan, root: Path) -> list[Row]:
    """4-bit vs the half-precision chat path of a 7B-width Llama; figures scaled to 32 blocks in `extra`."""
    size = plan.chat_llm
    comm_spec(plan.encoders, root)
    preset = root / plan.encoders.name / "comm.json"
    modes = dict(plan.chat_modes)
    if missing({"bitsandbytes": ""}):
        logger.warning("bitsandbytes is not installed: the chat runs %s only", next(iter(modes)))
        modes = {k: v for k, v in modes.items() if not v.get("load_4bit")}
    chat_root = root / f"chat{size.llm_layers}x{size.llm_width}"
    chat_root.mkdir(exist_ok=True)
    rows = generation.run(
        size,
        preset,
        chat_root,
        plan.repeats,
        plan.new_tokens,
        modes=modes,
        device=plan.device,
        save_dtype=plan.chat_save_dtype,
    )
    scale = CHAT_FULL_LAYERS / size.llm_layers
    for r in rows:
        r.size = f"{plan.encoders.name}+llm{size.llm_layers}x{size.llm_width}"
        if plan.encoders.name != "tiny":  # only the 7B width has a 32-block model to scale to
            r.extra["scaled_to_32_layers"] = {
                "note": f"times and memory x {scale:g} (blocks {size.llm_layers} -> 32; upper bound: tower, "
                "embeddings and head do not grow)",
                "first_token_s": r.extra["first_token_s"] * scale,
                "tok_per_s": r.throughput / scale if r.throughput else None,
                "peak_mib": r.peak_mib * scale if r.peak_mib is not None else None,
            }
    return rows


PARTS: dict[str, Callable[[Plan, Path], list[Row]]] = {
    "projector": run_projector,
    "train_step": run_train_step,
    "chat": run_chat,
}


def _row(rows: list[Row], bench: str, name: str, **extra: str) -> Row | None:
    for r in rows:
        if r.bench == bench and r.name == name and all(r.extra.get(k) == v for k, v in extra.items()):
            return r
    return None


def _f(value: float | None, unit: str = "", digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}{unit}"


def summary(rows: list[Row], peaks: dict[str, float | None], absent: dict[str, str]) -> str:
    """The headline table: each measure, the COMM figure, the baseline's, and their ratio."""
    lines = ["| measure | COMM | baseline | COMM / baseline |", "|---|---|---|---|"]
    comm, bare = _row(rows, "tower_forward", "comm_tower"), _row(rows, "tower_forward", "bare_encoders")
    if comm and bare:
        lines.append(
            f"| tower images/s, batch {comm.batch} | {_f(comm.throughput)} | bare encoders {_f(bare.throughput)} "
            f"| {_f(bare.median_s / comm.median_s)} |"
        )
        for label, tflops in peaks.items():
            if tflops:
                frac = comm.extra[f"fraction_of_{label}"]
                lines.append(
                    f"| tower share of {label.replace('_', ' ')} ({tflops:.4g} TFLOP/s) | {frac:.1%} | "
                    f"bare {bare.extra[f'fraction_of_{label}']:.1%} | - |"
                )
    mfm, dense = (
        _row(rows, "projector_fwd_bwd", "comm_mfm"),
        _row(rows, "projector_fwd_bwd", "dense_linear_equal_macs"),
    )
    if mfm and dense:
        lines.append(
            f"| MFM fwd+bwd ms, batch {mfm.batch} | {_f(mfm.median_s * 1e3)} | equal-MAC GEMM "
            f"{_f(dense.median_s * 1e3)} | {_f(mfm.ratio)} |"
        )
    steps = {t: _row(rows, "train_step", "whole_step", tower=t) for t in ("comm", "clip")}
    if steps["comm"] and steps["clip"]:
        c, b = steps["comm"], steps["clip"]
        lines.append(
            f"| train step tokens/s ({c.extra['llm_params'] / 1e9:.2g}B LLM, batch {c.batch}) | "
            f"{_f(c.extra['tokens_per_s'])} | CLIP layer {_f(b.extra['tokens_per_s'])} | "
            f"{_f(c.extra['tokens_per_s'] / b.extra['tokens_per_s'])} |"
        )
        mem = "peak_total_mib" if c.extra["peak_total_mib"] is not None else None
        cm = c.extra[mem] if mem else c.peak_mib
        bm = b.extra[mem] if mem else b.peak_mib
        what = "peak memory MiB" if mem else "step's added peak MiB"
        lines.append(
            f"| train step {what} | {_f(cm, digits=5)} | CLIP layer {_f(bm, digits=5)} | {_f(cm / bm)} |"
        )
    chat = [r for r in rows if r.bench == "generation"]
    if len(chat) == 1 and "bitsandbytes" in absent:
        lines.append(f"| chat 4-bit | not run: bitsandbytes is not installed | {chat[0].name} | - |")
    if len(chat) == 2:
        base, q = chat
        for label, key, fmt in (("first token ms", "first_token_s", 1e3), ("peak MiB", None, 1.0)):
            a = (q.extra[key] if key else q.peak_mib) * fmt
            b = (base.extra[key] if key else base.peak_mib) * fmt
            lines.append(
                f"| chat {q.name} {label} ({q.size}) | {_f(a, digits=5)} | {base.name} {_f(b, digits=5)} "
                f"| {_f(a / b)} |"
            )
        lines.append(
            f"| chat {q.name} tokens/s ({q.size}) | {_f(q.throughput)} | {base.name} {_f(base.throughput)} | "
            f"{_f(q.throughput / base.throughput)} |"
        )
        s_q, s_b = q.extra.get("scaled_to_32_layers"), base.extra.get("scaled_to_32_layers")
        if s_q and s_b:
            lines.append(
                f"| chat {q.name} scaled to 32 blocks: first token ms / tok/s / peak MiB | "
                f"{_f(s_q['first_token_s'] * 1e3)} / {_f(s_q['tok_per_s'])} / {_f(s_q['peak_mib'], digits=5)} | "
                f"{_f(s_b['first_token_s'] * 1e3)} / {_f(s_b['tok_per_s'])} / {_f(s_b['peak_mib'], digits=5)} | - |"
            )
    return "\n".join(lines)


def run(
    args: argparse.Namespace, plan: Plan
) -> tuple[list[Row], dict[str, float | None], dict[str, float], dict[str, str]]:
    """Every requested part; the peak FLOP rates used; seconds per part; the error of each part that failed."""
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - {"tower", *PARTS})
    if unknown:
        raise UsageError(f"--parts: unknown {unknown}; choose from {['tower', *PARTS]}")
    device = torch.device(plan.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks: dict[str, float | None] = {
        "datasheet_peak": table_peak_tflops(name) if device.type == "cuda" else None,
        "measured_gemm": measured_gemm_tflops(plan.gemm_size, plan.dtype, device, plan.repeats),
    }
    logger.info("peak %s: %s", name, peaks)
    root = Path(tempfile.mkdtemp(prefix="comm_gpu_check_"))
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    try:
        for part in parts:
            start = time.perf_counter()
            try:
                rows += run_tower(plan, root, peaks) if part == "tower" else PARTS[part](plan, root)
            except Exception as err:  # one failed part must not cost the others' figures on a lent GPU
                logger.exception("part %s failed", part)
                errors[part] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            seconds[part] = time.perf_counter() - start
            logger.info("%s: %.0f s", part, seconds[part])
            gc.collect()
            _reset_peak(device)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows, peaks, seconds, errors


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad flags or a missing GPU stop with one line and exit code 2."""
    return run_command("gpu_check", _main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log_file = args.out_dir / "gpu_check.log"
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(log_file, mode="w")],
        force=True,
    )
    torch.set_num_threads(args.threads)
    if not args.dry_run and not torch.cuda.is_available():
        raise UsageError(
            "no CUDA GPU visible to torch; run on a GPU machine, or pass --dry-run for the CPU check"
        )
    absent = missing(OPTIONAL)
    for name, why in absent.items():
        logger.warning("missing package %s: %s", name, why)
    plan = make_plan(args)
    start = time.perf_counter()
    rows, peaks, seconds, errors = run(args, plan)
    total = time.perf_counter() - start
    hw = hardware()
    title = f"{'dry run, CPU' if args.dry_run else hw.get('gpu', 'GPU')}: {total:.0f} s"
    text = "\n".join(
        [
            f"Hardware: {hw}",
            f"Missing: {sorted(absent) or 'none'}",
            "",
            f"## {title}",
            summary(rows, peaks, absent),
            *[f"| {part} | FAILED: {why} | - | - |" for part, why in errors.items()],
            "",
            table(rows),
        ]
    )
    print(text)
    with log_file.open("a") as f:
        f.write(text + "\n")
    doc = {
        "meta": {
            "hardware": hw,
            "command": "scripts/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
            "dry_run": args.dry_run,
            "missing_packages": absent,
            "peak_tflops": peaks,
            "seconds": {**seconds, "total": total},
            "errors": errors,
            "plan": {k: str(v) for k, v in dataclasses.asdict(plan).items()},
        },
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    out = args.out_dir / "gpu_check.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(out)
    print(f"wrote {out} and {log_file}")
    return 1 if errors else 0


if __name__ == "__main__":
    main()
