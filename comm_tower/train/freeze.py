"""Per-stage freezing: which parts train in stage 1, stage 2 and LoRA runs, logged part by part."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

logger = logging.getLogger(__name__)

PARTS = ("vision_tower", "mm_projector", "language_model")


@dataclass(frozen=True)
class StagePlan:
    """What trains: the LLM (`full`, `lora` or `frozen`) and the projector; the tower never trains."""

    llm: str
    projector: bool

    def describe(self) -> str:
        """One line for the log."""
        return f"llm={self.llm}, projector={'train' if self.projector else 'frozen'}, vision_tower=frozen"


def plan_for(
    tune_mm_mlp_adapter: bool, freeze_backbone: bool, freeze_mm_mlp_adapter: bool, lora: bool
) -> StagePlan:
    """Stage 1 (`tune_mm_mlp_adapter`): projector only; stage 2: LLM (full or LoRA) and projector."""
    if tune_mm_mlp_adapter:
        if lora:
            raise ValueError("--tune_mm_mlp_adapter (stage 1) trains only the projector; drop --lora_enable")
        return StagePlan(llm="frozen", projector=True)
    llm = "frozen" if freeze_backbone else ("lora" if lora else "full")
    return StagePlan(llm=llm, projector=not freeze_mm_mlp_adapter)


def part_of(name: str) -> str:
    """Which part a parameter name belongs to (`vision_tower`, `mm_projector`, `language_model`, `lora`)."""
    if "lora_" in name:
        return "lora"
    for part in PARTS:
        if f"{part}." in name:
            return part
    return "other"


def apply_plan(model: nn.Module, plan: StagePlan) -> None:
    """Set requires_grad part by part. LoRA adapters keep the flag peft gave them; the tower is always frozen."""
    for name, param in model.named_parameters():
        part = part_of(name)
        if part == "vision_tower":
            param.requires_grad_(False)
        elif part == "mm_projector":
            param.requires_grad_(plan.projector)
        elif part == "language_model" or part == "other":
            param.requires_grad_(plan.llm == "full")
    log_trainable(model, plan)


def count_by_part(model: nn.Module) -> dict[str, tuple[int, int]]:
    """`part -> (trainable, frozen)` parameter counts (ZeRO-3 shards counted at full size)."""
    out: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        n = getattr(param, "ds_numel", param.numel())
        slot = out.setdefault(part_of(name), [0, 0])
        slot[0 if param.requires_grad else 1] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def log_trainable(model: nn.Module, plan: StagePlan | None = None) -> dict[str, tuple[int, int]]:
    """Log, for each part, how many parameters train and how many are frozen; returns the counts."""
    counts = count_by_part(model)
    if plan is not None:
        logger.info("stage plan: %s", plan.describe())
    for part, (train, frozen) in sorted(counts.items()):
        logger.info("%-15s trainable %12s  frozen %12s", part, f"{train:,}", f"{frozen:,}")
    return counts
