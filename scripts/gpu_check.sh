#!/usr/bin/env bash
# The GPU figures in one run (comm_tower/bench/gpu_check.py): COMM tower vs its bare encoders and the bf16 peak,
# MFM vs the equal-FLOPs GEMM, a ~1B-LLM stage-2 training step vs LLaVA-1.5's CLIP layer, 4-bit vs fp16 chat
# of a 7B-width Llama. Writes gpu_check/gpu_check.json and gpu_check/gpu_check.log and prints a table.
#   bash scripts/gpu_check.sh             one GPU, real shapes, bf16 (about 5 minutes on an H100-class GPU)
#   bash scripts/gpu_check.sh --dry-run   the same code on the CPU with tiny shapes (CI runs this)
#   PYTHON  interpreter (default python)   other flags: --help
# Without comm_tower installed it runs from this checkout; missing optional packages (bitsandbytes,
# deepspeed, flash-attn) are listed at the start and in the JSON.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m comm_tower.bench.gpu_check "$@"
