"""LLaVA's `llava.train.train_mem`, unchanged, with COMM towers.

Usage: `deepspeed llava_patch/launch/train_mem.py ARGS (flash-attention 2: GPU only)`
"""

import os
import sys

if __package__ in (None, ""):  # started as a file path (how `deepspeed` starts scripts): import from the repo
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from llava_patch.run import run_module_patched

if __name__ == "__main__":
    run_module_patched("llava.train.train_mem", sys.argv[1:])
