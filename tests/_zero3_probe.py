"""One rank of `comm-train` under ZeRO-3, started by `torch.distributed.run` from
`tests/test_train_llava_zero3.py`: `python _zero3_probe.py OUT [comm-train arguments...]`.

After the trainer has trained, every rank runs the vision tower on the same fixed pixels (ZeRO-3 gathers the
shards inside forward, so every rank must call it) and writes `OUT.rank<N>.pt`: the features, the world
size, and how many of the tower's parameters were ZeRO-3 partitioned at that point.
"""

from __future__ import annotations

import sys

import torch

PIXEL_SEED = 1234


def fixed_pixels(size: int) -> torch.Tensor:
    """The probe images: the same on every rank and in the test's single-process check."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(PIXEL_SEED))


def main() -> None:
    from comm_tower.train import cli
    from comm_tower.train.trainer import CommTrainer

    out, args = sys.argv[1], sys.argv[2:]
    train = CommTrainer.train

    def train_then_probe(self, *a, **k):
        result = train(self, *a, **k)
        tower = self.model.get_vision_tower()
        pixels = fixed_pixels(tower.config.image_size).to(tower.dtype)
        params = list(tower.parameters())
        record = {  # counted before the forward pass gathers the shards
            "count": len(params),
            "zero": sum(hasattr(p, "ds_id") for p in params),  # ZeRO-3 parameters
            "empty": sum(p.numel() == 0 for p in params),  # held as shards on other ranks at this point
            "world": torch.distributed.get_world_size(),
        }
        with torch.no_grad():
            record["features"] = tower(pixels)
        torch.save(record, f"{out}.rank{torch.distributed.get_rank()}.pt")
        return result

    CommTrainer.train = train_then_probe
    sys.exit(cli.main(args))


if __name__ == "__main__":
    main()
