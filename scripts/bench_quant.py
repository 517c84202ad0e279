#!/usr/bin/env python
"""Peak memory of loading a COMM model in fp32 / fp16 / bf16 / 8-bit / 4-bit, each in a fresh process.

    python scripts/bench_quant.py                          # builds a ~120M-parameter Llama + tiny-comm tower
    python scripts/bench_quant.py --model-path ckpt/comm-7b --device cuda --modes fp16,4bit

Per mode it prints: load time, peak resident memory during the load above the process's memory after
imports (Linux VmHWM, reset through /proc/self/clear_refs; ru_maxrss where that is not possible), resident
memory after the load, bytes held by the model's weights, peak CUDA memory, and how far the next-token
logits are from the first mode's (max |diff| / max |logit|, cosine). Python-level tracers such as
tracemalloc do not see tensor memory, so the numbers come from the OS and torch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package
MODES = {
    "fp32": {"dtype": "float32"},
    "fp16": {"dtype": "float16"},
    "bf16": {"dtype": "bfloat16"},
    "8bit": {"load_8bit": True},
    "4bit": {"load_4bit": True},
}


def rss_kib(field: str) -> int | None:
    """VmRSS / VmHWM of this process in KiB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_kib(exact: bool) -> int:
    """Peak resident memory so far: VmHWM when it could be reset, else ru_maxrss."""
    import resource

    return (rss_kib("VmHWM") or 0) if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def weight_bytes(model) -> int:
    """Bytes of every parameter and buffer (packed 4-bit / int8 storage counted as stored)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.data_ptr(), t.nbytes)
        if key not in seen:
            seen.add(key)
            total += t.nbytes
    return total


def child(args: argparse.Namespace) -> None:
    """Load once in this process and print one JSON line of measurements."""
    import torch

    from comm_tower.inference.loading import load_pretrained_model, part_dtypes

    torch.set_num_threads(max(1, args.threads))
    on_cuda = args.device.startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    exact = reset_peak()
    base, base_anon = rss_kib("VmRSS") or 0, rss_kib("RssAnon") or 0
    start = time.perf_counter()
    tokenizer, model, processor, _ = load_pretrained_model(
        args.model_path, args.model_base, device=args.device, **MODES[args.mode]
    )
    seconds = time.perf_counter() - start
    peak_load = peak_kib(exact)
    anon = rss_kib("RssAnon") or 0
    size = processor.crop_size["height"]
    ids = torch.tensor([[tokenizer.bos_token_id or 1, -200, *range(5, 25)]], device=args.device)
    with torch.no_grad():
        logits = model(input_ids=ids, images=torch.rand(1, 3, size, size)).logits[0, -1].float().cpu()
    peak_forward = peak_kib(exact)
    torch.save(logits, args.logits_out)
    out = {
        "mode": args.mode,
        "load_s": round(seconds, 2),
        "peak_exact": exact,
        "peak_load_mib": round((peak_load - base) / 1024, 1),
        "peak_forward_mib": round((peak_forward - base) / 1024, 1),
        "anon_after_mib": round((anon - base_anon) / 1024, 1),
        "weights_mib": round(weight_bytes(model) / 2**20, 1),
        "cuda_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_cuda else None,
        "parts": part_dtypes(model),
    }
    print("BENCH " + json.dumps(out), flush=True)


def build_synthetic(folder: Path, hidden: int, layers: int, vocab: int) -> Path:
    """A full COMM checkpoint: a random Llama of the given size + the tiny-comm tower, saved in fp32."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from comm_tower.model import assemble_model
    from comm_tower.zoo.tiny import default_tiny_dir, ensure_tiny_encoders
    from comm_tower.zoo.tiny_lm import build_tiny_llama

    ensure_tiny_encoders(default_tiny_dir())
    tok_dir = build_tiny_llama(folder / "tokenizer_source")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    config = LlamaConfig(
        vocab_size=max(vocab, len(tokenizer)),
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    llm = LlamaForCausalLM(config)
    model = assemble_model(llm, "tiny-comm", "linear")
    out = folder / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"built a {llm.num_parameters() / 1e6:.0f}M-parameter LLM + tiny-comm tower in {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run each mode in its own process and print a table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-path", default=None, help="checkpoint to load (default: build a synthetic one)")
    p.add_argument("--model-base", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", default="fp32,4bit", help=f"comma-separated, from {','.join(MODES)}")
    p.add_argument("--hidden", type=int, default=1024, help="synthetic LLM width")
    p.add_argument("--layers", type=int, default=8, help="synthetic LLM depth")
    p.add_argument("--vocab", type=int, default=16000, help="synthetic LLM vocabulary")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--logits-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.mode = args.child
        child(args)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"--modes: unknown {unknown}; use {sorted(MODES)}")
    with tempfile.TemporaryDirectory(prefix="comm_bench_") as tmp:
        model_path = args.model_path or str(build_synthetic(Path(tmp), args.hidden, args.layers, args.vocab))
        rows, logits = [], {}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env["OMP_NUM_THREADS"] = str(args.threads)
        for mode in modes:
            target = Path(tmp) / f"{mode}.pt"
            cmd = [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--model-path",
                model_path,
                "--device",
                args.device,
                "--logits-out",
                str(target),
                "--threads",
                str(args.threads),
            ]
            if args.model_base:
                cmd += ["--model-base", args.model_base]
            run = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in run.stdout.splitlines() if ln.startswith("BENCH ")), None)
            if run.returncode or line is None:
                print(f"{mode}: failed\n{run.stderr[-1500:]}", file=sys.stderr)
                continue
            rows.append(json.loads(line[6:]))
            logits[mode] = target
        report(rows, logits)


def report(rows: list[dict], logits: dict[str, Path]) -> None:
    """Print the table; logits compared against the first mode that loaded."""
    import torch

    if not rows:
        raise SystemExit("no mode loaded")
    ref_mode = rows[0]["mode"]
    ref = torch.load(logits[ref_mode])
    head = f"{'mode':6} {'load s':>6} {'peak load':>9} {'peak +fwd':>9} {'anon after':>10} {'weights':>8} {'cuda':>6}"
    print("memory in MiB, above what the process held after its imports")
    print(head + f"  vs {ref_mode}: max|d|/max|l| cosine  parts")
    for r in rows:
        cur = torch.load(logits[r["mode"]])
        rel = ((cur - ref).abs().max() / ref.abs().max()).item()
        cos = torch.nn.functional.cosine_similarity(cur, ref, dim=0).item()
        cuda = "-" if r["cuda_peak_mib"] is None else f"{r['cuda_peak_mib']:.0f}"
        mark = "" if r["peak_exact"] else "*"
        parts = ", ".join(f"{k} {v}" for k, v in r["parts"].items())
        print(
            f"{r['mode']:6} {r['load_s']:6.1f} {r['peak_load_mib']:8.0f}{mark} {r['peak_forward_mib']:8.0f}{mark} "
            f"{r['anon_after_mib']:10.0f} {r['weights_mib']:8.0f} {cuda:>6}  {rel:13.4f} {cos:7.4f}  {parts}"
        )
    print(
        "peak load / +fwd: highest resident memory during the load / after one forward pass (* = ru_maxrss, "
        "imports included); anon after: anonymous (non file-backed) memory after the load; weights: bytes of "
        "parameters and buffers. fp32 from an fp32 safetensors file is memory-mapped, so its pages become "
        "resident only when the forward pass touches them."
    )


if __name__ == "__main__":
    main()
