"""Both training stages of the demo through `comm-train` itself (`comm_tower.train.cli.main`, in process).

The flags are those of `scripts/pretrain.sh` / `scripts/finetune.sh` with CPU-sized numbers, so the demo
exercises exactly the code path a cluster run takes (minus DeepSpeed, which needs several processes).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)
RECIPES = ("comm", "llava")


@dataclass(frozen=True)
class StageSettings:
    """Steps, batch, learning rate and length grouping of one stage."""

    steps: int
    batch_size: int
    lr: float
    warmup_ratio: float = 0.03
    # batches sorted by length together (`--length_group_batches`): 8 cuts the padded positions of a step by
    # 16-18 % (the conversations vary by a third in length) while the batch order stays random; 0: no grouping
    length_group: int = 8


def stage_argv(
    stage: int,
    llm: Path,
    tower: str,
    data_dir: Path,
    out_dir: Path,
    settings: StageSettings,
    projector: str = "mlp2x_gelu",
    max_length: int = 256,
    seed: int = 0,
    recipe: str = "comm",
    save_every: int | None = None,
) -> list[str]:
    """`comm-train` flags for stage 1 (captions, plain template) or stage 2 (instructions, v1).

    `recipe="comm"` (the paper): the LLM and the projector train in both stages, stage 2 starting from the
    whole stage-1 model. `recipe="llava"` (LLaVA-1.5): stage 1 trains only the projector (`mm_projector.bin`).
    `save_every`: also save the model (not the optimizer) every that many steps, `checkpoint-<step>`.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    argv = [
        "--model_name_or_path", str(llm),
        "--version", "plain" if stage == 1 else "v1",
        "--data_path", str(Path(data_dir) / f"stage{stage}.json"),
        "--image_folder", str(data_dir),
        "--vision_tower", tower,
        "--mm_projector_type", projector,
        "--image_aspect_ratio", "pad",
        "--output_dir", str(out_dir),
        "--max_steps", str(settings.steps),
        "--per_device_train_batch_size", str(settings.batch_size),
        "--learning_rate", str(settings.lr),
        "--weight_decay", "0.",
        "--warmup_ratio", str(settings.warmup_ratio),
        "--lr_scheduler_type", "cosine",
        "--logging_steps", str(max(1, min(10, settings.steps // 10))),
        "--model_max_length", str(max_length),
        "--gradient_checkpointing", "False",
        "--dataloader_num_workers", "0",
        "--save_strategy", "no",
        "--eval_strategy", "no",
        "--report_to", "none",
        "--bf16", "False",
        "--use_cpu", "True",
        "--seed", str(seed),
        "--disable_tqdm", "False",
    ]  # fmt: skip
    if settings.length_group:
        argv += ["--group_by_modality_length", "True", "--length_group_batches", str(settings.length_group)]
    if save_every is not None:
        argv[argv.index("--save_strategy") + 1] = "steps"
        argv += ["--save_steps", str(save_every), "--save_only_model", "True"]
    stage1_dir = Path(out_dir).parent / "stage1"
    if stage == 1 and recipe == "llava":
        argv += ["--tune_mm_mlp_adapter", "True"]
    elif stage == 2 and recipe == "llava":
        argv += ["--pretrain_mm_mlp_adapter", str(stage1_dir / "mm_projector.bin")]
    elif stage == 2:  # the paper's recipe: stage 2 continues the whole stage-1 model
        argv[argv.index("--model_name_or_path") + 1] = str(stage1_dir)
    return argv


def run_stage(argv: list[str]) -> None:
    """Train one stage with `comm-train`'s own entry point."""
    from comm_tower.train.cli import main as comm_train

    logger.info("comm-train %s", " ".join(argv))
    comm_train(argv)


def losses(out_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) pairs the trainer logged in `trainer_state.json`."""
    path = Path(out_dir) / "trainer_state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trainer state; did the stage finish?")
    state = json.loads(path.read_text())
    return [(int(h["step"]), float(h["loss"])) for h in state["log_history"] if "loss" in h]


def plot_losses(curves: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    """One PNG with a loss curve per (run, stage), each stage counted from its own step 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
