"""Both training stages of the demo through `comm-train` itself (`comm_tower.train.cli.main`, in process).

The flags are those of `scripts/pretrain.sh` / `scripts/finetune.sh` with CPU-sized numbers, so the demo
exercises exactly the code path a cluster run takes (minus DeepSpeed, which needs several processes).
"""

from __future__ import annotations

import json
import logging
import math
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
    # batches sorted by length together (`--length_group_batches`; 0: none). 8 cuts a step's padded positions
    # by 16-18 % and its time by 13-14 %, but reorders the samples: the demo keeps plain random batches,
    # whose order reaches the yes/no target on every seed measured (grouped, seed 3 stays near blind).
    length_group: int = 0


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
    system: str | None = None,
) -> list[str]:
    """`comm-train` flags for stage 1 (captions, plain template) or stage 2 (instructions, v1).

    `recipe="comm"` (the paper): the LLM and the projector train in both stages, stage 2 starting from the
    whole stage-1 model. `recipe="llava"` (LLaVA-1.5): stage 1 trains only the projector (`mm_projector.bin`).
    `save_every`: also save the model (not the optimizer) every that many steps, `checkpoint-<step>`.
    `system`: the system prompt the data trains with (`--system_prompt`, recorded in the checkpoint).
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
    if system is not None:
        argv += ["--system_prompt", system]
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
    """One PNG with a loss curve per (run, stage), each stage counted from its own step 0, log-scale loss.

    Drawn with Pillow (a core dependency), so the demo installs no plotting library.
    """
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 700, 400, 60, 20, 20, 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    points = [p for pts in curves.values() for p in pts if p[1] > 0]
    max_step = max((s for s, _ in points), default=1) or 1
    lo = math.log10(min((v for _, v in points), default=0.1))
    hi = math.log10(max((v for _, v in points), default=10.0))
    lo, hi = math.floor(lo * 2) / 2, math.ceil(hi * 2) / 2 + (0.5 if hi == lo else 0.0)

    def xy(step: float, loss: float) -> tuple[float, float]:
        x = left + (width - left - right) * step / max_step
        y = height - bottom - (height - top - bottom) * (math.log10(loss) - lo) / (hi - lo)
        return x, y

    for decade in range(math.floor(lo), math.ceil(hi) + 1):
        for mult in (1, 2, 5):
            value = mult * 10.0**decade
            if lo <= math.log10(value) <= hi:
                _, y = xy(0, value)
                draw.line([(left, y), (width - right, y)], fill=(225, 225, 225))
                draw.text((4, y - 6), f"{value:g}", fill="black", font=font)
    for k in range(6):
        step = max_step * k / 5
        x, _ = xy(step, 10.0**lo)
        draw.line([(x, top), (x, height - bottom)], fill=(225, 225, 225))
        draw.text((x - 10, height - bottom + 4), f"{step:.0f}", fill="black", font=font)
    draw.rectangle([(left, top), (width - right, height - bottom)], outline="black")
    draw.text((width // 2 - 12, height - 16), "step", fill="black", font=font)
    draw.text((left + 6, top + 4), "training loss (log scale)", fill="black", font=font)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    for n, (label, pts) in enumerate(curves.items()):
        colour = colours[n % len(colours)]
        line = [xy(s, v) for s, v in pts if v > 0]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        elif line:
            draw.ellipse([(line[0][0] - 2, line[0][1] - 2), (line[0][0] + 2, line[0][1] + 2)], fill=colour)
        y = top + 8 + 14 * n
        draw.line([(width - right - 190, y + 6), (width - right - 170, y + 6)], fill=colour, width=2)
        draw.text((width - right - 165, y), label, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
