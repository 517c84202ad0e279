"""Answer a question file with a loaded model, in batches, appending to a resumable answers file."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from comm_tower.data.images import load_image
from comm_tower.eval.questions import answered_ids, append_answers
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.generation import GenerationConfig
from comm_tower.inference.prompts import user_text

logger = logging.getLogger(__name__)


def answer_questions(
    assistant: Assistant,
    questions: Sequence[dict[str, Any]],
    answers_file: str | Path,
    image_folder: str | Path = ".",
    gen: GenerationConfig | None = None,
    batch_size: int = 1,
    model_id: str = "comm",
) -> int:
    """Answer every question not yet in `answers_file`; returns how many were answered in this call."""
    gen = gen or GenerationConfig()
    done = answered_ids(answers_file)
    todo = [q for q in questions if str(q["question_id"]) not in done]
    if done:
        logger.info(
            "%d of %d questions already answered in %s; resuming", len(done), len(questions), answers_file
        )
    index_of = {str(q["question_id"]): i for i, q in enumerate(questions)}
    bar = tqdm(total=len(todo), desc="answering", unit="q")
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        with_image = [bool(q.get("image")) for q in chunk]
        if any(with_image) and not all(with_image):
            # a batch holds either images for every prompt or for none; split mixed chunks
            groups = [
                [q for q, w in zip(chunk, with_image) if w],
                [q for q, w in zip(chunk, with_image) if not w],
            ]
        else:
            groups = [chunk]
        for group in groups:
            texts = _answer_group(assistant, group, index_of, Path(image_folder), gen)
            records = []
            for q, (prompt, text) in zip(group, texts):
                meta = {k: q[k] for k in ("category", "subset") if k in q}
                records.append(
                    {
                        "question_id": q["question_id"],
                        "prompt": prompt,
                        "text": text,
                        "answer_id": uuid.uuid4().hex,
                        "model_id": model_id,
                        "metadata": meta,
                    }
                )
            append_answers(answers_file, records)
            bar.update(len(group))
    bar.close()
    return len(todo)


def _answer_group(
    assistant: Assistant,
    group: Sequence[dict[str, Any]],
    index_of: dict[str, int],
    image_folder: Path,
    gen: GenerationConfig,
) -> list[tuple[str, str]]:
    has_image = bool(group[0].get("image"))
    ids, pixels, sizes, prompts = [], [], [], []
    for q in group:
        prompts.append(user_text(str(q["text"]), has_image))
        ids.append(assistant.question_ids(str(q["text"]), has_image))
        if has_image:
            img = load_image(image_folder / q["image"], index=index_of[str(q["question_id"])])
            pixels.append(assistant.pixels(img))
            sizes.append(img.size)
    answers = assistant.answer(ids, pixels or None, sizes or None, gen)
    return list(zip(prompts, answers))
