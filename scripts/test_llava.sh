#!/usr/bin/env bash
# LLaVA 1.2.2 + transformers 4.37.2 environment (.venv-llava, pins in constraints/llava.txt): the llava_patch
# tests, LLaVA token-layout parity of our templates, and the core tests on LLaVA's transformers pin.
set -euo pipefail
cd "$(dirname "$0")/.."
# DeepSpeed builds its CPU ops for this venv in its own folder (not the one other venvs build theirs in)
export TORCH_EXTENSIONS_DIR=$PWD/.venv-llava/torch_extensions
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv-llava/bin/python ] || ! .venv-llava/bin/python -c \
    "import llava, google.protobuf, transformers as t, accelerate as a; assert (t.__version__, a.__version__) == ('4.37.2', '0.34.2')" \
    2>/dev/null; then
    rm -rf .venv-llava
    "${PYTHON:-python3}" -m venv .venv-llava
    .venv-llava/bin/pip install -q torch==2.13.0
    .venv-llava/bin/pip install -q -c constraints/llava.txt transformers tokenizers accelerate peft sentencepiece \
        safetensors "numpy<2" pillow requests fastapi uvicorn pytest protobuf
    DS_BUILD_OPS=0 .venv-llava/bin/pip install -q --no-build-isolation -c constraints/llava.txt deepspeed
    .venv-llava/bin/pip install -q --no-deps -c constraints/llava.txt llava-torch==1.2.2.post1
fi
OMP_NUM_THREADS=1 .venv-llava/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_llava_*.py tests/test_data_llava_parity.py tests/test_core_*.py "$@"
