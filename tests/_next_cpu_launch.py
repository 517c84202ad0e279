"""`python tests/_next_cpu_launch.py ARGS`: `llava_patch.launch.train` for NeXT's `train()` on a CPU-only torch.

NeXT's `safe_save_model_for_hf_trainer` calls `torch.cuda.synchronize()` unconditionally (it is written for
GPUs), which raises on a CPU-only torch; here there is nothing to synchronise, so it becomes a no-op. Everything
else is the launcher users run.
"""

import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    torch.cuda.synchronize = lambda device=None: None

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, as the launcher file does

from llava_patch.run import run_module_patched  # noqa: E402

if __name__ == "__main__":
    run_module_patched("llava.train.train", sys.argv[1:])
