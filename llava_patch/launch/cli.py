"""LLaVA's `llava.serve.cli`, unchanged, with COMM towers.

Usage: `python -m llava_patch.launch.cli --model-path DIR --image-file IMG`
"""

import os
import sys

if __package__ in (None, ""):  # started as a file path (how `deepspeed` starts scripts): import from the repo
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from llava_patch.run import run_module_patched

if __name__ == "__main__":
    run_module_patched("llava.serve.cli", sys.argv[1:])
