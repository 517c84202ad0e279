"""The demo end to end: data -> tiny models -> stage 1 -> stage 2 -> evaluation (and blind baseline) -> chat."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from comm_tower.demo.evaluation import ask, checkpoints, load_model, score_with_and_without_image
from comm_tower.demo.models import LlmSize, ensure_demo_models
from comm_tower.demo.synthetic import generate_dataset
from comm_tower.demo.training import StageSettings, losses, plot_losses, run_stage, stage_argv

logger = logging.getLogger(__name__)

# demo preset name -> zoo preset (tiny twins of the paper's rows)
PRESETS = {
    "clip": "tiny-clip",
    "clip-mfm": "tiny-clip-mfm",
    "dinov2-mfm": "tiny-dinov2-mfm",
    "comm": "tiny-comm",
}
# (table label, score key in the demo task's scores)
METRIC_ROWS = (
    ("yes/no accuracy", "pope/accuracy"),
    ("REC Acc@0.5", "rec/accuracy"),
    ("attribute accuracy", "attribute/accuracy"),
    ("count accuracy", "count/accuracy"),
)


@dataclass
class DemoConfig:
    """Everything a demo run depends on; the defaults are the README's run."""

    out: Path = Path("outputs/demo")
    seed: int = 0
    n_train: int = 3000
    n_test: int = 120
    # Sized for `make demo` on 2 cores (installation included); see docs/demo.md for the measurements.
    # Stage 1 is cheap (short captions), and 300 steps of it take seeds 3 and 4 over the yes/no target (150 do not).
    stage1: StageSettings = field(default_factory=lambda: StageSettings(steps=300, batch_size=32, lr=2e-3))
    # Stage 2: 450 steps take yes/no past blind + 20 on seeds 0-4; 400 leave seed 4 short (docs/demo.md).
    stage2: StageSettings = field(default_factory=lambda: StageSettings(steps=450, batch_size=32, lr=2e-3))
    llm: LlmSize = field(default_factory=LlmSize)
    recipe: str = "comm"  # comm: LLM + projector train in both stages (paper); llava: stage 1 projector only
    caption_boxes: bool = True  # grounded stage-1 captions (Shikra-style), each object with its box
    pope_pairs: int = 3  # yes/no pairs per training image: answers of one token need many examples
    token_grid: int | None = 4  # visual tokens per side: one per layout cell of the synthetic images
    # All of an image's stage-2 questions in one conversation, as LLaVA's instruction data has them: the image
    # is encoded once for all its answers (7 on average, at most 9).
    turns: int = 9
    # Stage-1 captions list objects by category: naming the next one means telling which categories are
    # present, its box means finding it by colour and shape (what existence questions need).
    caption_order: str = "category"
    # Replaces vicuna_v1's 30-token system prompt, which a randomly initialised LLM attends to as much as to
    # the image (with it, yes/no stays at the blind baseline).
    system: str | None = "Answer about the image."
    eval_limit: int | None = None
    cache_dir: Path | None = None
    # also save stage 2 every N steps and score each checkpoint afterwards: the held-out learning curve
    # (mid-schedule checkpoints, so they understate a shorter run, which anneals its learning rate sooner)
    score_every: int | None = None


@dataclass
class RunResult:
    """Scores of one preset with and without the image, its loss curves and its chat answer."""

    preset: str
    scores: dict[str, float]
    blind: dict[str, float]
    curves: dict[str, list[tuple[int, float]]]
    chat: tuple[str, str, str, str]  # image, question, answer, reference
    seconds: float
    # stage-2 step -> (scores, blind scores) of its checkpoint, with `score_every`
    by_step: dict[int, tuple[dict[str, float], dict[str, float]]] = field(default_factory=dict)


def demo_preset_file(preset: str, out: Path, token_grid: int | None) -> str:
    """The tiny twin of `preset`, pooled to `token_grid` tokens per side (the spec's token budget option)."""
    from comm_tower.zoo import load_preset

    spec = load_preset(PRESETS.get(preset, preset))
    data = spec.to_dict()
    data["name"] = f"demo-{preset}"
    data["token_grid"] = token_grid
    path = out / "presets" / f"demo-{preset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return str(path)


def prepare(cfg: DemoConfig) -> tuple[Path, dict[str, Path]]:
    """Generate the data set and build (or reuse) the tiny models."""
    data_dir = cfg.out / "data"
    generate_dataset(
        data_dir,
        seed=cfg.seed,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        caption_boxes=cfg.caption_boxes,
        pope_pairs=cfg.pope_pairs,
        turns=cfg.turns,
        caption_order=cfg.caption_order,
        system=cfg.system,
    )
    return data_dir, ensure_demo_models(data_dir, cfg.cache_dir, cfg.llm)


def run_preset(cfg: DemoConfig, preset: str, data_dir: Path, llm: Path) -> RunResult:
    """Both stages with `preset`'s tower, then held-out scores, blind scores and one chat answer."""
    start = time.time()
    tower = demo_preset_file(preset, cfg.out, cfg.token_grid)
    run_dir = cfg.out / "runs" / preset
    for stage, settings in ((1, cfg.stage1), (2, cfg.stage2)):
        print(
            f"\n== {preset}: stage {stage} ({settings.steps} steps, batch {settings.batch_size}) ==",
            flush=True,
        )
        stage_dir = run_dir / f"stage{stage}"
        for _, stale in checkpoints(stage_dir):  # an earlier run's: comm-train would resume from them
            shutil.rmtree(stale)
        argv = stage_argv(
            stage,
            llm,
            tower,
            data_dir,
            stage_dir,
            settings,
            seed=cfg.seed,
            recipe=cfg.recipe,
            save_every=cfg.score_every if stage == 2 else None,
            system=cfg.system if stage == 2 else None,
        )
        run_stage(argv)
    curves = {f"{preset} stage {s}": losses(run_dir / f"stage{s}") for s in (1, 2)}
    print(f"\n== {preset}: evaluation on {cfg.n_test} held-out images ==", flush=True)
    assistant = load_model(run_dir / "stage2")  # the chat format comes from the checkpoint, as in comm-chat
    scores, blind = score_with_and_without_image(assistant, data_dir, run_dir, cfg.eval_limit)
    question = next(q for q in _test_questions(data_dir) if q["category"] == "rec")
    answer = ask(assistant, data_dir / question["image"], question["text"])
    chat = (question["image"], question["text"], answer, question["answer"])
    by_step = _score_checkpoints(cfg, preset, run_dir / "stage2", data_dir) if cfg.score_every else {}
    result = RunResult(preset, scores, blind, curves, chat, time.time() - start, by_step)
    (run_dir / "result.json").write_text(json.dumps(result.__dict__, indent=1, default=str))
    return result


def _score_checkpoints(
    cfg: DemoConfig, preset: str, stage_dir: Path, data_dir: Path
) -> dict[int, tuple[dict[str, float], dict[str, float]]]:
    """(scores, blind scores) of every `checkpoint-<step>` that stage 2 saved, by step."""
    by_step = {}
    for step, folder in checkpoints(stage_dir):
        print(f"\n== {preset}: scoring the stage-2 checkpoint of step {step} ==", flush=True)
        by_step[step] = score_with_and_without_image(load_model(folder), data_dir, folder, cfg.eval_limit)
    return by_step


def _test_questions(data_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]


def _aligned(rows: list[list[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_table(results: list[RunResult]) -> str:
    """Rows: metrics; columns: each preset, then its blind baseline (image features zeroed)."""
    header = ["metric (held-out)"]
    for r in results:
        header += [r.preset, f"{r.preset} blind"]
    rows = [header]
    for label, key in METRIC_ROWS:
        row = [label]
        for r in results:
            row += [f"{r.scores.get(key, float('nan')):.1f}", f"{r.blind.get(key, float('nan')):.1f}"]
        rows.append(row)
    return _aligned(rows)


def curve_table(result: RunResult) -> str:
    """Rows: scored stage-2 checkpoints; columns: each metric as 'score (blind)'."""
    rows = [[f"{result.preset} stage-2 step"] + [label for label, _ in METRIC_ROWS]]
    for step, (scores, blind) in sorted(result.by_step.items()):
        rows.append(
            [str(step)]
            + [
                f"{scores.get(k, float('nan')):.1f} ({blind.get(k, float('nan')):.1f})"
                for _, k in METRIC_ROWS
            ]
        )
    return _aligned(rows)


def run_demo(cfg: DemoConfig, presets: list[str]) -> list[RunResult]:
    """The whole demo for each preset; prints the table, the chat answer and where the loss plot is."""
    t0 = time.time()
    data_dir, models = prepare(cfg)
    results = [run_preset(cfg, p, data_dir, models["llm"]) for p in presets]
    curves = {k: v for r in results for k, v in r.curves.items()}
    png = plot_losses(curves, cfg.out / "loss_curves.png")
    table = results_table(results)
    for r in results:
        if r.by_step:
            table += "\n\nheld-out scores (blind) of the stage-2 checkpoints:\n" + curve_table(r)
    (cfg.out / "results.md").write_text(table + "\n")
    print("\n" + table)
    image, question, answer, reference = results[-1].chat
    print(f"\nchat ({results[-1].preset}) about held-out {image}:\n  USER: {question}\n  ASSISTANT: {answer}")
    print(f"  (reference: {reference})")
    print(f"\nloss curves: {png}\ntotal time: {time.time() - t0:.0f} s")
    return results
