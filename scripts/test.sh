#!/usr/bin/env bash
# The project's test command (README, CI): pinned install, lint, the whole suite on the newest transformers,
# then the package as shipped (scripts/test_wheel.sh: sdist + wheel into a fresh venv), exported checkpoints in
# venvs without comm_tower (scripts/test_remote_code.sh), the lmms-eval plugin
# (scripts/test_lmms.sh) and, on LLaVA's transformers pin, the llava_patch suite and the core tests
# (scripts/test_llava.sh), then LLaVA-NeXT's train() and loader with COMM towers (scripts/test_llava_next.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
# the LLaVA-pin, LLaVA-NeXT and lmms-eval suites run below in their own venvs
.venv/bin/python -m pytest -q tests --ignore-glob='tests/test_llava_*' --ignore-glob='tests/test_next_*' \
    --ignore=tests/test_data_llava_parity.py --ignore=tests/test_eval_lmms_plugin.py
bash scripts/test_wheel.sh
bash scripts/test_remote_code.sh
bash scripts/test_lmms.sh
bash scripts/test_llava.sh
bash scripts/test_llava_next.sh
