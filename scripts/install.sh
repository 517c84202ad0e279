#!/usr/bin/env bash
# Create .venv (if missing) and install comm-tower with the pinned test versions (CPU torch, no CUDA download).
# Usage: bash scripts/install.sh [extras]   (default extras: train,quant,eval,serve,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${1:-train,quant,eval,serve,dev}
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export DS_BUILD_OPS=0 PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build. --no-compile: Python compiles
# only the modules it imports, on first import, instead of every file of every package at install
.venv/bin/pip install -q --no-compile -c constraints/ci.txt torch==2.13.0
.venv/bin/pip install -q --no-compile -c constraints/ci.txt -e ".[${EXTRAS}]"
echo "installed: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null)"
