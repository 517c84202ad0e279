"""Question and answer files in LLaVA's `model_vqa` JSONL format, with annotation merging and resuming.

Question line: `{"question_id", "image", "text", ...}` plus any ground-truth fields the metric reads.
Answer line (what LLaVA writes): `{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REQUIRED = ("question_id", "text")


def _read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON list, or JSON Lines (one object per line; blank lines skipped)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return list(json.loads(text))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}: not valid JSON ({err}); fix the file or write it as JSON Lines"
            ) from None
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}, line {lineno}: not valid JSON ({err}); fix or delete the line"
            ) from None
    return records


def load_questions(path: str | Path, annotations: str | Path | None = None) -> list[dict[str, Any]]:
    """Questions of a model_vqa file, validated, with fields of an annotation file merged by question_id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    questions = _read_records(path)
    if not questions:
        raise ValueError(
            f"question file {path} holds no questions; fix: point --question-file at a filled file"
        )
    seen: set[str] = set()
    for i, q in enumerate(questions):
        for name in REQUIRED:
            if name not in q:
                raise ValueError(f"{path}: question {i} has no '{name}' field (LLaVA model_vqa format)")
        key = str(q["question_id"])
        if key in seen:
            raise ValueError(
                f"{path}: question {i} repeats question_id {q['question_id']!r}; ids must be unique"
            )
        seen.add(key)
    if annotations is not None:
        extra = {str(a["question_id"]): a for a in _read_records(Path(annotations)) if "question_id" in a}
        missing = [q["question_id"] for q in questions if str(q["question_id"]) not in extra]
        if missing:
            raise ValueError(f"{annotations}: no annotation for question_id(s) {missing[:5]} ...")
        questions = [{**extra[str(q["question_id"])], **q} for q in questions]
    return questions


def answered_ids(path: str | Path) -> set[str]:
    """question_ids already answered in a file (none if it is missing); drops a cut-off last line."""
    path = Path(path)
    if not path.is_file():
        return set()
    ids = set()
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ids.add(str(json.loads(line)["question_id"]))
        except (json.JSONDecodeError, KeyError):
            if lineno == len(lines):  # a run killed mid-write: the partial line is answered again
                _truncate_last_line(path)
                break
            raise ValueError(f"{path}, line {lineno}: not an answer record; fix or delete the line") from None
    return ids


def _truncate_last_line(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]), encoding="utf-8")


def append_answers(path: str | Path, answers: Iterable[dict[str, Any]]) -> None:
    """Append answer records, one JSON object per line, flushed so an interrupted run can resume."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for a in answers:
            f.write(json.dumps(a, ensure_ascii=False) + "\n")
        f.flush()


def load_answers(path: str | Path) -> dict[str, dict[str, Any]]:
    """Answer records keyed by question_id (as a string)."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"answers file not found: {path}; fix: answer the questions first (run without --score-only)"
        )
    return {str(a["question_id"]): a for a in _read_records(Path(path))}
