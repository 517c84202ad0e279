#!/usr/bin/env bash
# The lmms-eval plugin tests, in .venv-lmms: lmms-eval 0.7.3 itself (no dependencies: its full set would
# replace torch/transformers), plus the two packages it needs to import and list models (loguru, pytz).
# Everything else (torch, transformers, comm_tower's dependencies) comes from .venv through a .pth file.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
if [ ! -x .venv-lmms/bin/python ]; then
    .venv/bin/python -m venv .venv-lmms
    main_site=$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')
    lmms_site=$(.venv-lmms/bin/python -c 'import site; print(site.getsitepackages()[0])')
    echo "$main_site" > "$lmms_site/comm_main_venv.pth"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv-lmms/bin/pip install -q --no-deps lmms-eval==0.7.3 loguru==0.7.3 pytz==2026.6
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv-lmms/bin/python -m pytest -q tests/test_eval_lmms_plugin.py "$@"
