"""Score the trained demo model on the held-out split with `comm-eval`'s own pieces, and against a blind twin.

The blind baseline is the same model with its image features zeroed (a forward hook on the projector),
so the gap between the two rows is what the model reads from the pixels rather than from the question.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from comm_tower.eval.answering import answer_questions
from comm_tower.eval.questions import load_questions
from comm_tower.eval.runner import merged_samples
from comm_tower.eval.scoring import score_samples
from comm_tower.eval.tasks import TASKS
from comm_tower.inference.generation import (
    GenerationConfig,
    generate_batch,
    pixel_values,
    prompt_ids,
    user_text,
)

logger = logging.getLogger(__name__)
GEN = GenerationConfig(max_new_tokens=24)


def load_model(model_dir: Path) -> tuple[Any, Any, Any]:
    """(tokenizer, model, image_processor) of a stage-2 checkpoint, on CPU in float32."""
    from comm_tower.inference.loading import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(model_dir), device="cpu", dtype=torch.float32)
    return tokenizer, model, processor


@contextlib.contextmanager
def blind(model: Any) -> Iterator[None]:
    """Within the block the projector outputs zeros: the model answers without seeing the image."""
    handle = model.get_model().mm_projector.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    try:
        yield
    finally:
        handle.remove()


def evaluate(
    bundle: tuple[Any, Any, Any],
    data_dir: Path,
    answers_file: Path,
    zero_image: bool = False,
    limit: int | None = None,
    batch_size: int = 32,
    system: str | None = None,
) -> dict[str, float]:
    """Answer `test.jsonl` (resumable answers file) and return the `demo` task's scores."""
    tokenizer, model, processor = bundle
    questions = load_questions(str(Path(data_dir) / "test.jsonl"))
    if limit is not None:
        questions = questions[:limit]
    ctx = blind(model) if zero_image else contextlib.nullcontext()
    with ctx:
        answer_questions(
            tokenizer,
            model,
            processor,
            questions,
            answers_file,
            data_dir,
            template="vicuna_v1",
            gen=GEN,
            batch_size=batch_size,
            image_aspect_ratio="pad",
            model_id="demo-blind" if zero_image else "demo",
            system=system,
        )
    samples = merged_samples(questions, answers_file)
    return score_samples(TASKS.get("demo"), samples, "pad")


def score_with_and_without_image(
    bundle: tuple[Any, Any, Any], data_dir: Path, folder: Path, limit: int | None, system: str | None
) -> tuple[dict[str, float], dict[str, float]]:
    """(scores, blind scores) on the held-out split; the answers go to `folder`, written afresh."""
    scores = []
    for name, zero in (("answers.jsonl", False), ("answers_blind.jsonl", True)):
        answers = Path(folder) / name
        answers.unlink(missing_ok=True)  # answers of an earlier run would be taken as resumed
        scores.append(evaluate(bundle, data_dir, answers, zero_image=zero, limit=limit, system=system))
    return scores[0], scores[1]


def checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the trainer's `checkpoint-<step>` folders in `stage_dir`, by step."""
    found = []
    for path in Path(stage_dir).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and path.is_dir():
            found.append((int(step), path))
    return sorted(found)


def ask(bundle: tuple[Any, Any, Any], image: Path, question: str, system: str | None = None) -> str:
    """One chat turn: the model's answer to `question` about `image` (`system`: as in training)."""
    from comm_tower.data.images import load_image

    tokenizer, model, processor = bundle
    ids = prompt_ids([("user", user_text(question, True))], tokenizer, "vicuna_v1", system)
    img = load_image(image)
    return generate_batch(model, tokenizer, [ids], [pixel_values(img, processor, "pad")], [img.size], GEN)[0]
