#!/usr/bin/env bash
# The GPU figures in one run (comm_tower/bench/gpu_check.py): COMM tower vs its bare encoders and the bf16 peak,
# MFM vs the equal-FLOPs GEMM, a ~1B-LLM stage-2 training step vs LLaVA-1.5's CLIP layer, 4-bit vs fp16 chat
# of a 7B-width Llama. Writes gpu_check/gpu_check.json and gpu_check/gpu_check.log and prints a table.
#   bash scripts/gpu_check.sh             one GPU, real shapes, bf16
#   bash scripts/gpu_check.sh --dry-run   the same code on the CPU with tiny shapes (CI runs this)
#   PYTHON  interpreter (default: python, else python3)   other flags: --help
# Runs from this checkout (comm_tower need not be installed). First it lists the packages this machine lacks
# (comm_tower/bench/preflight.py) and stops if a required one is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
"$PYTHON" -m comm_tower.bench.preflight
exec "$PYTHON" -m comm_tower.bench.gpu_check "$@"
