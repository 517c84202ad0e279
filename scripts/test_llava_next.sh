#!/usr/bin/env bash
# LLaVA-NeXT / OneVision environment (.venv-llava-next, pins in constraints/llava-next.txt): NeXT's own train()
# and load_pretrained_model with a COMM tower under anyres (tests/test_next_*.py). NeXT is not on PyPI: it is
# installed --no-deps from the source tarball in ../shared/third_party (LLAVA_NEXT_TARBALL overrides the path).
set -euo pipefail
cd "$(dirname "$0")/.."
# DeepSpeed builds its CPU ops for this venv in its own folder (not the one other venvs build theirs in)
export TORCH_EXTENSIONS_DIR=$PWD/.venv-llava-next/torch_extensions
export PIP_DISABLE_PIP_VERSION_CHECK=1
TARBALL=${LLAVA_NEXT_TARBALL:-../shared/third_party/LLaVA-NeXT-df17966.tar.gz}
VENV=.venv-llava-next
# the check reads installed versions only (importing NeXT would load transformers, deepspeed and trl)
if [ ! -x $VENV/bin/python ] || ! $VENV/bin/python -c "from importlib.metadata import version as v
assert (v('llava'), v('transformers'), v('trl'), v('datasets'), v('deepspeed')) == \
    ('1.7.0.dev0', '4.40.2', '0.8.6', '2.19.2', '0.19.8')" 2>/dev/null; then
    [ -f "$TARBALL" ] || { echo "test_llava_next.sh: LLaVA-NeXT source $TARBALL not found; set LLAVA_NEXT_TARBALL" >&2; exit 1; }
    rm -rf $VENV
    "${PYTHON:-python3}" -m venv $VENV
    PIP="$VENV/bin/pip install -q --no-compile -c constraints/llava-next.txt"
    $PIP torch==2.13.0
    # what `import llava.train.train` and `llava.model.builder` need: NeXT's trainer imports trl's DPOTrainer
    # (datasets, rich); train() imports deepspeed and yaml; the perceiver resampler einops; utils requests
    $PIP transformers tokenizers accelerate safetensors sentencepiece numpy pillow pyyaml einops requests \
        datasets rich pytest
    DS_BUILD_OPS=0 $PIP --no-build-isolation deepspeed
    $PIP --no-deps trl
    src=$(mktemp -d)
    tar xzf "$TARBALL" -C "$src"
    $PIP --no-deps "$src"/LLaVA-NeXT-*
    rm -rf "$src"
fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $VENV/bin/python -m pytest -q \
    -p no:cacheprovider tests/test_next_*.py "$@"
