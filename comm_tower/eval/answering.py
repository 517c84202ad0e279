"""Answer a question file with a loaded model, in batches, appending to a resumable answers file."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from comm_tower.data.errors import DataError
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
    skip_bad_samples: bool = False,
) -> int:
    """Answer every question not yet in `answers_file`; returns how many were answered in this call.

    With `skip_bad_samples`, a question whose image cannot be used gets a record with an empty `text` and
    the reason in `skipped` (so a rerun does not retry it, and scoring leaves it out); otherwise the
    image's `DataError` stops the run, naming the file and the question.
    """
    gen = gen or GenerationConfig()
    done = answered_ids(answers_file)
    todo = [q for q in questions if str(q["question_id"]) not in done]
    if done:
        logger.info(
            "%d of %d questions already answered in %s; resuming", len(done), len(questions), answers_file
        )
    index_of = {str(q["question_id"]): i for i, q in enumerate(questions)}
    # closed on an error too, so the error line starts on a line of its own
    with tqdm(total=len(todo), desc="answering", unit="q") as bar:
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
                records = []
                for q, prompt, text, skipped in _answer_group(
                    assistant, group, index_of, Path(image_folder), gen, skip_bad_samples
                ):
                    meta = {k: q[k] for k in ("category", "subset") if k in q}
                    record = {
                        "question_id": q["question_id"],
                        "prompt": prompt,
                        "text": text,
                        "answer_id": uuid.uuid4().hex,
                        "model_id": model_id,
                        "metadata": meta,
                    }
                    if skipped:
                        record["skipped"] = skipped
                        logger.warning("question %s skipped: %s", q["question_id"], skipped)
                    records.append(record)
                append_answers(answers_file, records)
                bar.update(len(group))
    return len(todo)


def _answer_group(
    assistant: Assistant,
    group: Sequence[dict[str, Any]],
    index_of: dict[str, int],
    image_folder: Path,
    gen: GenerationConfig,
    skip_bad_samples: bool,
) -> list[tuple[dict[str, Any], str, str, str | None]]:
    """(question, prompt, answer, skip reason) for each question; skipped ones are not asked."""
    has_image = bool(group[0].get("image"))
    asked, out, ids, pixels, sizes = [], [], [], [], []
    for q in group:
        prompt = user_text(str(q["text"]), has_image)
        if has_image:
            try:
                img = load_image(image_folder / q["image"], index=index_of[str(q["question_id"])])
            except DataError as err:
                if not skip_bad_samples:
                    raise
                out.append((q, prompt, "", str(err)))
                continue
            pixels.append(assistant.pixels(img))
            sizes.append(img.size)
        ids.append(assistant.question_ids(str(q["text"]), has_image))
        asked.append((q, prompt))
    if asked:
        answers = assistant.answer(ids, pixels or None, sizes or None, gen)
        out += [(q, prompt, text, None) for (q, prompt), text in zip(asked, answers)]
    return out
