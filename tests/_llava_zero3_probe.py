"""One rank of LLaVA's own `llava/train/train.py` under ZeRO-3 on CPU, started by `torch.distributed.run`
from `tests/test_llava_zero3.py`: `python _llava_zero3_probe.py OUT stock|comm [LLaVA's train arguments...]`.

`stock` runs LLaVA's module as it is; `comm` runs it through `llava_patch` (as `llava_patch.launch.train`).
One stand-in for a GPU: `torch.cuda.synchronize` is a no-op (LLaVA calls it before its final save under
DeepSpeed; a CPU build of torch raises there).

After LLaVA's trainer has trained, every rank runs the vision tower on the same fixed pixels (ZeRO-3 gathers
the shards inside forward, so every rank calls it) and writes `OUT.rank<N>.pt`: the features, what wraps the
model, and how many of the tower's parameters are ZeRO-3 parameters and empty shards at that point.
"""

from __future__ import annotations

import runpy
import sys

import torch

PIXEL_SEED = 1234


def fixed_pixels(size: int) -> torch.Tensor:
    """The probe images: the same on every rank and in the test's single-process check."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(PIXEL_SEED))


def main() -> None:
    out, flavour, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.cuda.synchronize = lambda device=None: None
    from llava.train.llava_trainer import LLaVATrainer

    train = LLaVATrainer.train

    def train_then_probe(self, *a, **k):
        result = train(self, *a, **k)
        tower = self.model.get_vision_tower()
        params = list(tower.parameters())
        record = {  # counted before the forward pass gathers the shards
            "count": len(params),
            "zero": sum(hasattr(p, "ds_id") for p in params),
            "empty": sum(p.numel() == 0 for p in params),
            "engine": type(self.model_wrapped).__name__,
            "world": torch.distributed.get_world_size(),
            "dtype": str(tower.dtype).removeprefix("torch."),
        }
        with torch.no_grad():
            record["features"] = tower(fixed_pixels(tower.config.image_size).to(tower.dtype))
        torch.save(record, f"{out}.rank{torch.distributed.get_rank()}.pt")
        return result

    LLaVATrainer.train = train_then_probe
    if flavour == "comm":
        from llava_patch.run import run_module_patched

        run_module_patched("llava.train.train", args)
    else:
        sys.argv = ["llava.train.train", *args]
        runpy.run_module("llava.train.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
