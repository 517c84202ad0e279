"""`comm-eval`: answer a model_vqa question file with a COMM model, score it, print it beside the paper.

    comm-eval --model-path ckpt/ --question-file pope_random.jsonl --image-folder coco/val2014 \
        --answers-file out/pope_random.jsonl --task pope_random

Answers are appended as they are produced; running the same command again skips answered question_ids.
`--score-only` scores an existing answers file (from any model) without loading a model.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from comm_tower.data.images import image_size
from comm_tower.errors import UsageError, run_command
from comm_tower.eval.answering import answer_questions
from comm_tower.eval.metrics import Scores
from comm_tower.eval.paper_numbers import CONTROLLED
from comm_tower.eval.questions import load_answers, load_questions
from comm_tower.eval.report import results_table
from comm_tower.eval.scoring import ASPECT_TO_FRAME, score_samples
from comm_tower.eval.tasks import TASKS
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.flags import add_generation_arguments, check_generation_arguments, generation_config

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of comm-eval."""
    p = argparse.ArgumentParser(prog="comm-eval", description=__doc__.split("\n")[0])
    p.add_argument("--model-path", help="checkpoint folder (not needed with --score-only)")
    p.add_argument("--model-base", default=None, help="base LLM for LoRA / projector-only checkpoints")
    p.add_argument("--question-file", required=True, help="LLaVA model_vqa JSONL (or JSON list)")
    p.add_argument("--annotations", default=None, help="JSONL/JSON of ground truth merged by question_id")
    p.add_argument("--image-folder", default=".", help="folder the questions' 'image' paths are relative to")
    p.add_argument("--answers-file", required=True, help="JSONL answers; existing answers are kept (resume)")
    p.add_argument("--task", required=True, choices=TASKS.names(), help="which metric and paper numbers")
    p.add_argument(
        "--image-aspect-ratio",
        default=None,
        choices=sorted(ASPECT_TO_FRAME),
        help="how images reach the model (and so the frame of REC boxes); default: the model config's, else pad",
    )
    p.add_argument("--batch-size", type=int, default=1)
    add_generation_arguments(p, beams=True)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--dtype", default=None, choices=[None, "float32", "float16", "bfloat16"])
    p.add_argument("--load-4bit", action="store_true")
    p.add_argument("--load-8bit", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="answer only the first N questions")
    p.add_argument("--score-only", action="store_true", help="skip answering; score the answers file")
    p.add_argument(
        "--paper-row",
        default="comm",
        choices=[*CONTROLLED, "none"],
        help="controlled-analysis row of the paper to print beside ours",
    )
    p.add_argument(
        "--skip-bad-samples",
        "--skip_bad_samples",
        action="store_true",
        help="leave out questions whose image is missing or unreadable (recorded with the reason in the "
        "answers file and listed in the scores file) instead of stopping",
    )
    p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    p.add_argument("--scores-file", default=None, help="also write all scores as JSON here")
    p.add_argument("--all-scores", action="store_true", help="print every score, not only the headline ones")
    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_model(args: argparse.Namespace) -> tuple[Any, Any, Any, int]:
    """(tokenizer, model, image_processor, context_len) through the project's loader."""
    import torch

    from comm_tower.inference.loading import load_pretrained_model

    if not args.model_path:
        raise UsageError("--model-path is required unless --score-only is given")
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return load_pretrained_model(
        args.model_path,
        args.model_base,
        load_4bit=args.load_4bit,
        load_8bit=args.load_8bit,
        device=args.device,
        dtype=dtype,
    )


def merged_samples(
    questions: list[dict[str, Any]], answers_file: str | Path
) -> tuple[list[dict[str, Any]], list]:
    """Questions joined with their answers (`prediction`), and the ids of skipped ones (left out)."""
    answers = load_answers(answers_file)
    missing = [q["question_id"] for q in questions if str(q["question_id"]) not in answers]
    if missing:
        raise ValueError(
            f"{answers_file}: {len(missing)} question(s) have no answer (first: {missing[:5]}); "
            "run without --score-only to answer them"
        )
    skipped = [q["question_id"] for q in questions if answers[str(q["question_id"])].get("skipped")]
    kept = [q for q in questions if not answers[str(q["question_id"])].get("skipped")]
    if not kept:
        raise ValueError(f"{answers_file}: every question was skipped (see each record's 'skipped' reason)")
    return [{**q, "prediction": answers[str(q["question_id"])]["text"]} for q in kept], skipped


def run(args: argparse.Namespace, bundle: tuple[Any, Any, Any, int] | None = None) -> Scores:
    """Answer (unless --score-only), score and print; `bundle` skips loading when a model is at hand."""
    questions = load_questions(args.question_file, args.annotations)
    if args.limit is not None:
        questions = questions[: args.limit]
    aspect = args.image_aspect_ratio
    if not args.score_only:
        bad = check_generation_arguments(args)
        if bad:
            raise UsageError(bad)
        assistant = Assistant(
            *(bundle if bundle is not None else load_model(args)),
            conv_mode=args.conv_mode,
            system_prompt=args.system_prompt,
            image_aspect_ratio=aspect,
        )
        aspect = assistant.image_aspect_ratio
        answer_questions(
            assistant,
            questions,
            args.answers_file,
            args.image_folder,
            gen=generation_config(args),
            batch_size=args.batch_size,
            model_id=Path(args.model_path).name if args.model_path else "comm",
            skip_bad_samples=args.skip_bad_samples,
        )
    merged, skipped = merged_samples(questions, args.answers_file)
    if skipped:
        logger.warning(
            "%d of %d question(s) skipped and not scored (first: %s); reasons in %s",
            len(skipped),
            len(questions),
            skipped[:5],
            args.answers_file,
        )
    samples = _with_image_sizes(merged, args.image_folder)
    task = TASKS.get(args.task)
    scores = score_samples(task, samples, aspect or "pad")
    row = None if args.paper_row == "none" else args.paper_row
    print(results_table(args.task, task, scores, row, all_scores=args.all_scores))
    if args.scores_file:
        written = {**scores, "skipped_question_ids": skipped} if skipped else scores
        Path(args.scores_file).write_text(json.dumps(written, indent=1))
    return scores


def _with_image_sizes(samples: list[dict[str, Any]], image_folder: str | Path) -> list[dict[str, Any]]:
    """Fill `width`/`height` from the image file's header for box samples that lack them (REC needs them)."""
    for i, s in enumerate(samples):
        if "bbox" in s and ("width" not in s or "height" not in s) and s.get("image"):
            s["width"], s["height"] = image_size(Path(image_folder) / s["image"], index=i)
    return samples


def main(argv: list[str] | None = None) -> int:
    """Entry point of `comm-eval` and `python -m comm_tower.eval`: one error line and exit 2 on bad input."""
    return run_command("comm-eval", _main, argv)


def _main(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(args)
