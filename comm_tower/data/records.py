"""Read LLaVA-format records (a JSON list or JSONL) and check each one, naming the sample and field."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comm_tower.constants import DEFAULT_IMAGE_TOKEN
from comm_tower.data.errors import DataError
from comm_tower.data.templates import Message, check_turns

logger = logging.getLogger(__name__)

# LLaVA writes "human"/"gpt"; OpenAI-style "user"/"assistant" and a leading "system" turn are accepted too.
ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
_FIX_JSON = "fix: repair the file (python -m json.tool FILE shows the first error)"


@dataclass(frozen=True)
class Sample:
    """A checked record: its position in the file, its turns and its image paths (relative to the folder)."""

    index: int
    messages: tuple[Message, ...]
    images: tuple[str, ...]
    words: int  # whitespace-split words over all turns: a cheap length for grouping


def read_records(path: str | Path) -> list[Any]:
    """Records of a `.json` (a list of objects) or `.jsonl` (one object a line) file, in file order.

    A JSONL line that does not parse is kept as a `DataError` so a skipping run can drop just that sample.
    """
    path = Path(path)
    subject = f"data file '{path}'"
    if path.is_dir():
        raise DataError(
            f"is a folder, not a data file; fix: pass the .json or .jsonl file inside it as --data_path "
            f"({path.resolve()})",
            subject=subject,
        )
    if not path.is_file():
        raise DataError(f"not found; fix: check --data_path ({path.resolve()})", subject=subject)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        records: list[Any] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                records.append(
                    DataError(f"malformed JSON on line {lineno} ({err.msg}, column {err.colno}); {_FIX_JSON}")
                )
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"malformed JSON at line {err.lineno}, column {err.colno} ({err.msg}); {_FIX_JSON}, "
            "or use .jsonl so one bad line can be skipped",
            subject=subject,
        ) from None
    if not isinstance(data, list):
        raise DataError(
            f"expected a JSON list of samples, got {type(data).__name__}; fix: wrap the samples in [...] "
            "or write one object a line as .jsonl",
            subject=subject,
        )
    return data


def _image_paths(record: dict, index: int) -> tuple[str, ...]:
    value = record.get("image")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() for p in items):
        raise DataError(
            f"expected a file name or a list of file names, got {value!r}; fix: give the image path "
            "relative to --image_folder, or drop the key for a text-only sample",
            index,
            "image",
        )
    return tuple(items)


def _messages(record: dict, index: int) -> tuple[Message, ...]:
    conv = record.get("conversations")
    if conv is None:
        raise DataError(
            "missing; fix: add a 'conversations' list of {from, value} turns", index, "conversations"
        )
    if not isinstance(conv, list) or not conv:
        raise DataError(
            "the conversation is empty; fix: give at least a human turn and a gpt turn, or remove the sample",
            index,
            "conversations",
        )
    out = []
    for j, turn in enumerate(conv):
        where = f"conversations[{j}]"
        if not isinstance(turn, dict):
            raise DataError(f"expected an object {{from, value}}, got {type(turn).__name__}", index, where)
        role = ROLE_NAMES.get(str(turn.get("from", turn.get("role", ""))).lower())
        if role is None:
            raise DataError(
                f"unknown speaker {turn.get('from')!r}; fix: use one of {sorted(ROLE_NAMES)}",
                index,
                f"{where}.from",
            )
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            raise DataError(f"expected text, got {type(value).__name__}", index, f"{where}.value")
        out.append(Message(role, value))
    try:
        check_turns(out)
    except ValueError as err:
        raise DataError(f"{err}; fix: reorder or remove turns", index, "conversations") from None
    if not any(m.role == "assistant" and m.content.strip() for m in out):
        raise DataError(
            "no non-empty gpt answer, so there is nothing to learn; fix: add the answer or remove the sample",
            index,
            "conversations",
        )
    return tuple(out)


def parse_record(record: Any, index: int, is_multimodal: bool = True) -> Sample:
    """Check one record's structure (not its image files) and turn it into a Sample."""
    if isinstance(record, DataError):
        raise record.at(index=index)
    if not isinstance(record, dict):
        raise DataError(f"expected an object with 'conversations', got {type(record).__name__}", index)
    messages = _messages(record, index)
    images = _image_paths(record, index) if is_multimodal else ()
    tags = sum(m.content.count(DEFAULT_IMAGE_TOKEN) for m in messages)
    if is_multimodal and tags > len(images):
        raise DataError(
            f"{tags} '{DEFAULT_IMAGE_TOKEN}' tag(s) but {len(images)} image(s); fix: remove the extra tags "
            "or list every image in 'image'",
            index,
            "conversations",
        )
    if not is_multimodal and tags:
        messages = tuple(
            Message(m.role, m.content.replace(DEFAULT_IMAGE_TOKEN, "").strip()) for m in messages
        )
    words = sum(len(m.content.split()) for m in messages)
    return Sample(index, messages, images, words)
