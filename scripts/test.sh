#!/usr/bin/env bash
# The project's test command (README, CI): pinned install, lint, the whole suite on the newest transformers,
# then the LLaVA-compatibility suite and the core tests on LLaVA's transformers pin (scripts/test_llava.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -m "not llava" tests
bash scripts/test_lmms.sh
if [ -f scripts/test_llava.sh ]; then
    bash scripts/test_llava.sh
fi
