"""Tiny comm-train runs in one process, fp32 against bf16: exact per-step losses and a gradient check.

`run_train(argv)` calls `comm_tower.train.cli.train` (the code `comm-train` runs) with a trainer that, after each
backward, records the loss and checks that every parameter with `requires_grad` holds a finite gradient.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from _serve_helpers import one_thread
from PIL import Image

from comm_tower.train import cli
from comm_tower.train.trainer import CommTrainer

logger = logging.getLogger("half_precision")
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}

# bf16 keeps 8 significant bits: unit roundoff u = 2**-8 (0.39 %). The loss is a mean over tokens of
# cross-entropies computed from bf16 activations; per-token rounding errors average out in that mean, so a
# bf16 run's loss should sit within one rounding of the loss itself (u/2 relative) of the fp32 run's, also
# after a few (bf16-rounded) updates. Measured on these tiny runs (3 steps, all 8 cases and the script): at
# most 0.11 u relative at any step (stage 2 full from a comm_llava checkpoint), 0.02-0.11 u at step 1. The
# bound u/2 leaves 4.6x that margin; a dtype bug (a wrong cast, fp32 weights silently trained in bf16 by
# the wrong optimiser state, a NaN) moves a loss by far more or stops the run.
BF16_U = 2.0**-8
BF16_LOSS_RTOL = BF16_U / 2


@dataclass
class Run:
    """What one training run did: the loss of every step, and the parameters that lacked a gradient."""

    losses: list[float] = field(default_factory=list)
    missing_grads: set[str] = field(default_factory=set)
    trainable: int = 0
    param_dtypes: set[torch.dtype] = field(default_factory=set)


class _Recording(CommTrainer):
    """CommTrainer that records each step's loss and checks every trainable parameter's gradient."""

    record: Run

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.record.losses.append(float(loss))
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.record.trainable = len(trainable)
        self.record.param_dtypes |= {p.dtype for _, p in trainable}
        for name, param in trainable:
            if param.grad is None or not torch.isfinite(param.grad).all():
                self.record.missing_grads.add(name)
        return loss


def run_train(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """`comm-train argv` in this process; what it did, step by step."""
    record = Run()
    trainer_cls = type("RecordingTrainer", (_Recording,), {"record": record})
    with monkeypatch.context() as patch, one_thread():  # tiny ops: 2 threads on 2 shared cores cost 3x
        patch.setattr(cli, "CommTrainer", trainer_cls)
        cli.train(argv)
    return record


def make_data(root: Path, n: int = 4) -> dict[str, Path]:
    """`n` coloured images with captions (stage 1) and questions (stage 2)."""
    images = root / "images"
    images.mkdir(parents=True)
    caption, instruct = [], []
    for i in range(n):
        name = list(COLORS)[i % 4]
        Image.new("RGB", (40 + 8 * (i % 3), 32), COLORS[name]).save(images / f"{i}.png")
        caption.append(_record(i, "<image>", f"A {name} square."))
        instruct.append(_record(i, "<image>\nWhat color is the square?", f"The square is {name}."))
    (root / "caption.json").write_text(json.dumps(caption))
    (root / "instruct.json").write_text(json.dumps(instruct))
    return {"images": images, "caption": root / "caption.json", "instruct": root / "instruct.json"}


def _record(i: int, question: str, answer: str) -> dict:
    convs = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": str(i), "image": f"{i}.png", "conversations": convs}


def common_flags(out: Path, steps: int = 3) -> list[str]:
    """The HF flags every tiny run shares: CPU, no DataLoader workers, a fixed seed, no saving mid-run."""
    return [
        *("--output_dir", str(out), "--use_cpu", "True", "--max_steps", str(steps)),
        *("--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy", "no"),
        *("--report_to", "none", "--dataloader_num_workers", "0", "--seed", "0", "--model_max_length", "256"),
        *("--vision_tower", "tiny-comm", "--mm_projector_type", "linear", "--lr_scheduler_type", "constant"),
    ]


def assert_close_losses(bf16: list[float], fp32: list[float], rtol: float = BF16_LOSS_RTOL) -> None:
    """Same number of steps, every bf16 loss finite and within `rtol` (relative) of the fp32 run's."""
    assert len(bf16) == len(fp32) > 0, (bf16, fp32)
    worst = max(abs(h - f) / abs(f) for h, f in zip(bf16, fp32, strict=True))
    logger.warning(
        "largest relative loss difference %.2e = %.3f u (bound %.3f u)", worst, worst / BF16_U, rtol / BF16_U
    )
    for step, (half, full) in enumerate(zip(bf16, fp32, strict=True), 1):
        assert torch.isfinite(torch.tensor(half)), f"step {step}: bf16 loss {half}"
        assert abs(half - full) <= rtol * abs(full), (
            f"step {step}: bf16 {half} vs fp32 {full} (rtol {rtol:.4f})"
        )
