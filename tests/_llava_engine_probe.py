"""`llava_patch/launch/train.py` (LLaVA's own `llava.train.train` with COMM towers) that also reports what the
trainer trained in: the `LAUNCHER` of `scripts/llava/pretrain.sh` in tests/test_llava_train.py.

After LLaVA's trainer has trained, each rank logs one line on stderr:
`trained in <class of trainer.model_wrapped>, ZeRO stage <n or None>, world size <w>`.
"""

from __future__ import annotations

import logging
import sys

import torch

logger = logging.getLogger("llava_engine_probe")


def main() -> None:
    from llava.train.llava_trainer import LLaVATrainer

    from llava_patch.run import run_module_patched

    train = LLaVATrainer.train

    def train_then_report(self, *a, **k):
        result = train(self, *a, **k)
        wrapped = self.model_wrapped
        stage = wrapped.zero_optimization_stage() if hasattr(wrapped, "zero_optimization_stage") else None
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        logger.warning("trained in %s, ZeRO stage %s, world size %d", type(wrapped).__name__, stage, world)
        return result

    LLaVATrainer.train = train_then_report
    run_module_patched("llava.train.train", sys.argv[1:])


if __name__ == "__main__":
    main()
