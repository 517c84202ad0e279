"""Which packages the GPU check needs and which this machine lacks, checked before anything heavy is imported.

`python -m comm_tower.bench.preflight` prints one line per missing package (what it is for, how to bring it)
and exits 2 when a required one is missing; `scripts/gpu_check.sh` runs it first.
"""

from __future__ import annotations

import importlib.util
import sys

# import name -> pip name, for the packages comm_tower's benchmark code imports
REQUIRED = {
    "torch": "torch",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "safetensors": "safetensors",
    "tokenizers": "tokenizers",
    "numpy": "numpy",
    "PIL": "pillow",
    "tqdm": "tqdm",
}
# import name -> what it is needed for
OPTIONAL = {
    "bitsandbytes": "the 4-bit chat rows (without it the chat runs fp16 only)",
    "deepspeed": "not used by the GPU check; comm-train's ZeRO scripts need it on a training machine",
    "flash_attn": "optional: the training step runs SDPA attention without it",
}
HOW = "carry it as a wheel (docs/performance.md, 'Packages on a machine without a registry')"


def missing(names: dict[str, str]) -> dict[str, str]:
    """The entries of `names` whose module cannot be found."""
    return {name: why for name, why in names.items() if importlib.util.find_spec(name) is None}


def main() -> int:
    """Print what is missing; 2 when a required package is, else 0."""
    required = missing(REQUIRED)
    for name, pip_name in required.items():
        print(
            f"gpu_check: required package '{pip_name}' (import {name}) is not installed: {HOW}",
            file=sys.stderr,
        )
    for name, why in missing(OPTIONAL).items():
        print(f"gpu_check: optional package '{name}' is not installed: {why}; {HOW}", file=sys.stderr)
    return 2 if required else 0


if __name__ == "__main__":
    sys.exit(main())
