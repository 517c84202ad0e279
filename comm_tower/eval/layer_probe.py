"""Per-layer probe (the paper's layer analysis): one small projector per encoder layer, scored on a task.

For every chosen layer k of one encoder, the tower is that encoder alone reading `hidden_states[k]`; the LLM
and the encoder stay frozen and only the projector (with the encoder's alignment MLP, if the preset has
one) is trained on LLaVA-format conversations. Each probe then answers a model_vqa question file and is
scored with the task's metric (`comm-eval`'s code), and the score per layer is plotted to a PNG.

    python -m comm_tower.eval.layer_probe --llm vicuna-7b --preset clip --layers 1-24 \
        --train-data stage2.json --question-file test.jsonl --image-folder data --task demo --out probe/

Results go to `OUT/scores.json` (updated after each layer; finished layers are skipped on a rerun),
`OUT/layer_XX/answers.jsonl`, and `OUT/layer_probe.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path
from typing import Any

import torch

from comm_tower.errors import run_command
from comm_tower.eval.answering import answer_questions
from comm_tower.eval.questions import load_questions
from comm_tower.eval.runner import merged_samples
from comm_tower.eval.scoring import score_samples
from comm_tower.eval.tasks import TASKS
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.generation import GenerationConfig
from comm_tower.spec import resolve_layer_indices

logger = logging.getLogger(__name__)


def parse_layers(text: str | None, num_layers: int) -> list[int]:
    """'1-24', '4,8,12' or '2-12:2' -> block indices (hidden_states[k], 1-based); None -> all blocks."""
    if not text:
        return list(range(1, num_layers + 1))
    layers: list[int] = []
    for part in text.split(","):
        rng, _, step = part.partition(":")
        lo, dash, hi = rng.partition("-")
        try:
            values = range(int(lo), int(hi) + 1, int(step or 1)) if dash else [int(lo)]
        except ValueError:
            raise ValueError(f"--layers '{text}': '{part}' is not N, A-B or A-B:STEP") from None
        layers.extend(values)
    return sorted(set(resolve_layer_indices(layers, num_layers, "--layers", blocks_only=True)))


def probe_preset(preset: str, encoder: str | None, layer: int, folder: Path) -> Path:
    """Write a preset JSON with only `encoder` reading block `layer` (single-layer 'mean' fusion)."""
    from comm_tower.zoo import load_preset

    spec = load_preset(preset)
    names = [e.name for e in spec.encoders]
    chosen = encoder or names[0]
    if chosen not in names:
        raise ValueError(f"--encoder '{chosen}' is not in preset '{preset}' (has {names})")
    data = spec.to_dict()
    data["encoders"] = [e for e in data["encoders"] if e["name"] == chosen]
    enc = data["encoders"][0]
    enc["layers"], enc["fusion"] = [layer], "mean"
    for key in ("width", "num_layers", "encoder_image_size", "patch_size", "layer_indices"):
        enc.pop(key, None)
    data["name"] = f"probe-{chosen}-L{layer:02d}"
    path = folder / f"{data['name']}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def encoder_depth(preset: str, encoder: str | None) -> int:
    """Number of blocks of the probed encoder (from its config)."""
    from comm_tower.zoo import spec_for_name

    spec = spec_for_name(preset)
    enc = next((e for e in spec.encoders if encoder in (None, e.name)), None)
    if enc is None:
        raise ValueError(f"--encoder '{encoder}' is not in preset '{preset}'")
    return int(enc.num_layers)


def train_projector(model: Any, tokenizer: Any, args: argparse.Namespace) -> list[float]:
    """Train only `model.model.mm_projector` for `args.steps` steps; returns the loss of each step."""
    from comm_tower.data.collator import DataCollatorForSupervisedDataset
    from comm_tower.data.dataset import DataArguments, LazySupervisedDataset

    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.model.mm_projector.parameters())
    for p in params:
        p.requires_grad_(True)
    data_args = DataArguments(
        data_path=args.train_data,
        image_folder=args.image_folder,
        image_aspect_ratio=args.image_aspect_ratio,
        template=args.template,
        image_tokens=model.get_vision_tower().num_patches,
    )
    dataset = LazySupervisedDataset(
        args.train_data, tokenizer, model.get_vision_tower().image_processor, data_args
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=DataCollatorForSupervisedDataset(tokenizer),
        generator=torch.Generator().manual_seed(args.seed),
    )
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    model.train()
    losses: list[float] = []
    while len(losses) < args.steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
            losses.append(float(loss.item()))
            if len(losses) >= args.steps:
                break
    model.eval()
    return losses


def headline_score(task_name: str, scores: dict[str, float], key: str | None) -> tuple[str, float]:
    """The score plotted per layer: `key`, else the task's first headline score present."""
    if key is not None:
        if key not in scores:
            raise KeyError(f"--score-key '{key}' not among the scores: {sorted(scores)}")
        return key, scores[key]
    for name, _ in TASKS.get(task_name).headline:
        if name in scores:
            return name, scores[name]
    raise KeyError(f"task '{task_name}' produced none of its headline scores; pass --score-key")


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    """Score per layer as a line plot (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(int(k) for k in results["layers"])
    values = [results["layers"][str(k)]["score"] for k in layers]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(layers, values, marker="o")
    ax.set_xlabel("encoder block (hidden_states index)")
    ax.set_ylabel(results["score_key"])
    ax.set_title(title)
    ax.set_xticks(layers)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Probe every requested layer (skipping finished ones), save scores and the plot; returns the results."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from comm_tower.model import assemble_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "scores.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"layers": {}}
    layers = parse_layers(args.layers, encoder_depth(args.preset, args.encoder))
    questions = load_questions(args.question_file, args.annotations)
    if args.limit is not None:
        questions = questions[: args.limit]
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    llm = None
    for layer in layers:
        if str(layer) in results["layers"]:
            logger.info(
                "layer %d already probed (score %.2f); skipping",
                layer,
                results["layers"][str(layer)]["score"],
            )
            continue
        random.seed(args.seed)
        torch.manual_seed(args.seed)
        if llm is None:
            llm = AutoModelForCausalLM.from_pretrained(args.llm).to(args.device)
        model = assemble_model(
            llm,
            str(probe_preset(args.preset, args.encoder, layer, out)),
            args.projector_type,
            image_aspect_ratio=args.image_aspect_ratio,
        )
        losses = train_projector(model, tokenizer, args)
        answers = out / f"layer_{layer:02d}" / "answers.jsonl"
        answers.unlink(missing_ok=True)  # a half-answered file belongs to an untrained projector
        assistant = Assistant(
            tokenizer,
            model,
            model.get_vision_tower().image_processor,
            conv_mode=args.template,
            image_aspect_ratio=args.image_aspect_ratio,
        )
        answer_questions(
            assistant,
            questions,
            answers,
            args.image_folder,
            gen=GenerationConfig(max_new_tokens=args.max_new_tokens),
            batch_size=args.eval_batch_size,
            model_id=f"probe-L{layer}",
        )
        scores = score_samples(
            TASKS.get(args.task), merged_samples(questions, answers)[0], args.image_aspect_ratio
        )
        key, value = headline_score(args.task, scores, args.score_key)
        results["score_key"] = key
        results["layers"][str(layer)] = {"score": value, "scores": scores, "losses": losses}
        results_path.write_text(json.dumps(results, indent=1))
        logger.info("layer %d: %s = %.2f (final loss %.4f)", layer, key, value, losses[-1])
        del model
    if results["layers"]:
        plot(
            results,
            out / "layer_probe.png",
            f"{args.preset}/{args.encoder or 'first encoder'} on {args.task}",
        )
    return results


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the layer probe."""
    p = argparse.ArgumentParser(prog="comm-layer-probe", description=__doc__.split("\n")[0])
    p.add_argument("--llm", required=True, help="HF causal LM folder (with its tokenizer); kept frozen")
    p.add_argument("--preset", required=True, help="tower preset (or .json) whose encoder is probed")
    p.add_argument("--encoder", default=None, help="which encoder of the preset (default: the first)")
    p.add_argument("--layers", default=None, help="'1-24', '4,8,12', '2-24:2' (default: every block)")
    p.add_argument("--train-data", required=True, help="LLaVA-format JSON/JSONL conversations")
    p.add_argument("--question-file", required=True, help="model_vqa JSONL scored per layer")
    p.add_argument("--annotations", default=None)
    p.add_argument("--image-folder", default=".")
    p.add_argument("--task", required=True, choices=TASKS.names())
    p.add_argument("--score-key", default=None, help="score to plot (default: the task's headline score)")
    p.add_argument("--template", default="vicuna_v1")
    p.add_argument("--projector-type", default="mlp2x_gelu")
    p.add_argument("--image-aspect-ratio", default="pad", choices=["pad", "square"])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `comm-layer-probe`: bad input stops with one line and exit code 2."""
    return run_command("comm-layer-probe", _main, argv)


def _main(argv: list[str] | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = run_probe(build_parser().parse_args(argv))
    for layer in sorted(results["layers"], key=int):
        print(f"layer {int(layer):3d}  {results['score_key']} {results['layers'][layer]['score']:.2f}")


if __name__ == "__main__":
    main()
