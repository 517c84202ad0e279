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
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.generation import GenerationConfig

logger = logging.getLogger(__name__)
GEN = GenerationConfig(max_new_tokens=24)  # held-out answers are a word, a count or a box


def load_model(model_dir: Path) -> Assistant:
    """A stage-2 checkpoint on CPU in float32, answering in the chat format it was trained with."""
    return Assistant.load(str(model_dir), device="cpu", dtype=torch.float32)


@contextlib.contextmanager
def blind(model: Any) -> Iterator[None]:
    """Within the block the projector outputs zeros: the model answers without seeing the image."""
    handle = model.get_model().mm_projector.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
    try:
        yield
    finally:
        handle.remove()


def evaluate(
    assistant: Assistant,
    data_dir: Path,
    answers_file: Path,
    zero_image: bool = False,
    limit: int | None = None,
    batch_size: int = 32,
) -> dict[str, float]:
    """Answer `test.jsonl` (resumable answers file) and return the `demo` task's scores."""
    questions = load_questions(str(Path(data_dir) / "test.jsonl"))
    if limit is not None:
        questions = questions[:limit]
    ctx = blind(assistant.model) if zero_image else contextlib.nullcontext()
    with ctx:
        answer_questions(
            assistant,
            questions,
            answers_file,
            data_dir,
            gen=GEN,
            batch_size=batch_size,
            model_id="demo-blind" if zero_image else "demo",
        )
    samples, _ = merged_samples(questions, answers_file)
    return score_samples(TASKS.get("demo"), samples, assistant.image_aspect_ratio)


def score_with_and_without_image(
    assistant: Assistant, data_dir: Path, folder: Path, limit: int | None
) -> tuple[dict[str, float], dict[str, float]]:
    """(scores, blind scores) on the held-out split; the answers go to `folder`, written afresh."""
    scores = []
    for name, zero in (("answers.jsonl", False), ("answers_blind.jsonl", True)):
        answers = Path(folder) / name
        answers.unlink(missing_ok=True)  # answers of an earlier run would be taken as resumed
        scores.append(evaluate(assistant, data_dir, answers, zero_image=zero, limit=limit))
    return scores[0], scores[1]


def checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the trainer's `checkpoint-<step>` folders in `stage_dir`, by step."""
    found = []
    for path in Path(stage_dir).glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and path.is_dir():
            found.append((int(step), path))
    return sorted(found)


def ask(assistant: Assistant, image: Path, question: str) -> str:
    """One chat turn as comm-chat answers it: greedy, as long as fits, in the recorded chat format."""
    from comm_tower.data.images import load_image

    return assistant.ask(load_image(image), question)
