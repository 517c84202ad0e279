#!/usr/bin/env bash
# Remote code of an exported checkpoint in venvs WITHOUT comm_tower, on the oldest and the newest transformers
# it supports (comm_tower/hub/remote_code.py: SUPPORTED_TRANSFORMERS): tests_remote/ loads it through
# AutoModelForImageTextToText, AutoProcessor and pipeline("image-text-to-text") with trust_remote_code=True and
# checks the greedy tokens against comm-chat's, which .venv (comm_tower installed) computes first.
#   newest: .venv-remote-new, .venv's transformers;  oldest: .venv-remote-old, constraints/remote-code-oldest.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export PIP_DISABLE_PIP_VERSION_CHECK=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python tests/_hub_helpers.py "$work/data" >/dev/null

# Both venvs see .venv's site-packages as a plain path (a .pth line): torch, tokenizers, numpy, Pillow, pytest
# without a copy, and without running .venv's own .pth files, so its editable comm_tower stays invisible.
# The oldest venv has transformers pinned in its own site-packages, which come first on sys.path.
base_python=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')  # .venv's own interpreter
main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
oldest=$(sed -n 's/^transformers==//p' constraints/remote-code-oldest.txt)
newest=$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')
make_venv() {  # folder, transformers version to install there (empty: .venv's own)
    local site
    rm -rf "$1"
    "$base_python" -m venv --without-pip "$1"
    site=$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$main_site" >"$site/main-venv.pth"
    if [ -n "$2" ]; then
        .venv/bin/pip install -q --no-deps --target "$site" -c constraints/remote-code-oldest.txt "transformers==$2"
    fi
}
check() {  # folder, transformers version it must hold; comm_tower must not be importable there
    (cd "$work" && env -u PYTHONPATH "$REPO/$1/bin/python" -c "import importlib.util as u, transformers as t
assert u.find_spec('comm_tower') is None, 'comm_tower is importable'
assert t.__version__ == '$2', f'transformers {t.__version__}'" 2>"$work/check.err") || { cat "$work/check.err"; false; }
}
check .venv-remote-new "$newest" >/dev/null || make_venv .venv-remote-new ""
check .venv-remote-old "$oldest" >/dev/null || make_venv .venv-remote-old "$oldest"
check .venv-remote-new "$newest"
check .venv-remote-old "$oldest"
for venv in .venv-remote-new .venv-remote-old; do
    # from a folder outside the repo and without PYTHONPATH: neither the working tree nor tests/conftest.py is seen
    (cd "$work" && env -u PYTHONPATH COMM_REMOTE_DIR="$work/data" "$REPO/$venv/bin/python" -m pytest -q -p no:cacheprovider \
        "$REPO/tests_remote")
done
