#!/usr/bin/env bash
# The package as shipped. `python -m build` makes the sdist and, from that sdist, the wheel (so a file the
# sdist lacks fails here too); both listings are checked against the source tree's packages and presets.
# The wheel then goes into a fresh venv (torch first, pinned: an unpinned torch pulls a multi-GB CUDA build;
# no .pyc compiling at install: only what the check imports is compiled) with the `serve` extra (comm-serve's
# modules import FastAPI), and
# scripts/check_installed.py runs from a folder outside the source tree: every module imports, every console
# script answers --help, comm-presets lists the presets, a tiny COMM tower + projector runs, and
# `from comm_tower import load_pretrained_model` works.
# Other extras are not installed: deepspeed, peft, bitsandbytes and gradio are imported lazily, where a
# command needs them. One module is skipped, named in the output: comm_tower.eval.lmms_plugin imports
# lmms_eval at import time (the `lmms` extra; scripts/test_lmms.sh tests it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/comm_wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TQDM_DISABLE=1
unset PYTHONPATH COMM_ZOO_DIR COMM_TINY_DIR
start=$SECONDS

# a copy of the working tree (tracked and new files, not ignored or deleted ones), so the build writes
# nothing into the checkout
mkdir "$WORK/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        xargs -0 tar -cf - | tar -xf - -C "$WORK/src"
else
    tar -cf - --exclude=.venv --exclude='.venv-*' --exclude=build --exclude=dist . | tar -xf - -C "$WORK/src"
fi
"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q -c constraints/ci.txt build
echo "wheel test: building the sdist and the wheel ($((SECONDS - start)) s)"
(cd "$WORK/src" && "$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1) || {
    tail -40 "$WORK/build.log"
    exit 1
}
"$PY" - "$WORK/src" "$WORK"/dist/*.tar.gz "$WORK"/dist/*.whl <<'EOF'
"""Every source folder holding .py files ships its __init__.py, and the presets ship, in sdist and wheel."""
import sys, tarfile, zipfile
from pathlib import Path

src, sdist, wheel = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
folders = sorted({p.parent.relative_to(src).as_posix() for top in ("comm_tower", "llava_patch")
                  for p in (src / top).rglob("*.py")})
presets = sorted(p.name for p in (src / "zoo" / "presets").glob("*.json"))
with tarfile.open(sdist) as tf:
    in_sdist = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
with zipfile.ZipFile(wheel) as zf:
    in_wheel = set(zf.namelist())
missing = [f"sdist: {f}/__init__.py" for f in folders if f"{f}/__init__.py" not in in_sdist]
missing += [f"wheel: {f}/__init__.py" for f in folders if f"{f}/__init__.py" not in in_wheel]
missing += [f"sdist: zoo/presets/{p}" for p in presets if f"zoo/presets/{p}" not in in_sdist]
missing += [f"wheel: comm_tower/zoo/presets/{p}" for p in presets if f"comm_tower/zoo/presets/{p}" not in in_wheel]
if missing:
    sys.exit("missing from the built distributions (a folder without __init__.py is not a package):\n  "
             + "\n  ".join(missing))
print(f"sdist and wheel hold {len(folders)} packages and {len(presets)} presets")
EOF

echo "wheel test: installing the wheel into a fresh venv ($((SECONDS - start)) s)"
"$PY" -m pip install -q --no-compile -c constraints/ci.txt torch==2.13.0
wheel=$(ls "$WORK"/dist/*.whl)
"$PY" -m pip install -q --no-compile -c constraints/ci.txt "${wheel}[serve]"
echo "wheel test: checking the installed package ($((SECONDS - start)) s)"
mkdir "$WORK/run"
cp scripts/check_installed.py "$WORK/run/"
(cd "$WORK/run" && "$PY" check_installed.py)
echo "wheel test passed in $((SECONDS - start)) s"
