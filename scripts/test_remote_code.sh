#!/usr/bin/env bash
# Remote code of an exported checkpoint in venvs WITHOUT comm_tower, on the oldest and the newest transformers
# it supports (comm_tower/hub/remote_code.py: SUPPORTED_TRANSFORMERS): tests_remote/ loads it through
# AutoModelForImageTextToText, AutoProcessor and pipeline("image-text-to-text") with trust_remote_code=True and
# checks the greedy tokens against comm-chat's, which .venv (comm_tower installed) computes first.
#   newest: .venv-remote-new sees .venv's site-packages as a plain path (its .pth files, the editable comm_tower
#           among them, are not run);  oldest: .venv-remote-old, pins in constraints/remote-code-oldest.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export PIP_DISABLE_PIP_VERSION_CHECK=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python tests/_hub_helpers.py "$work/data" >/dev/null

new=.venv-remote-new
if [ ! -x "$new/bin/python" ]; then
    "${PYTHON:-python3}" -m venv --without-pip "$new"
    site=$("$new/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    .venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$site/main-venv.pth"
fi
old=.venv-remote-old
if [ ! -x "$old/bin/python" ] || ! "$old/bin/python" -c "import transformers, pytest" 2>/dev/null; then
    rm -rf "$old"
    "${PYTHON:-python3}" -m venv "$old"
    "$old/bin/pip" install -q torch==2.13.0
    "$old/bin/pip" install -q -c constraints/remote-code-oldest.txt transformers tokenizers safetensors pillow \
        numpy huggingface-hub pytest
fi
for venv in "$new" "$old"; do
    # from a folder outside the repo and without PYTHONPATH: neither the working tree nor tests/conftest.py is seen
    (cd "$work" && env -u PYTHONPATH COMM_REMOTE_DIR="$work/data" "$REPO/$venv/bin/python" -m pytest -q -p no:cacheprovider \
        "$REPO/tests_remote")
done
