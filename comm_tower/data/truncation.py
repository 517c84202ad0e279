"""Fit a tokenized sample into model_max_length without ever cutting an image."""

from __future__ import annotations

from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.data.errors import DataError


class SampleTooLong(DataError):
    """A sample that cannot be shortened to fit: an image or every answer would be cut off."""


def expanded_length(ids: list[int], image_tokens: int) -> int:
    """Sequence length after the model replaces each image id by `image_tokens` visual tokens."""
    return len(ids) + (image_tokens - 1) * ids.count(IMAGE_TOKEN_INDEX)


def truncate(
    ids: list[int], labels: list[int], max_length: int, image_tokens: int = 1
) -> tuple[list[int], list[int], bool]:
    """Cut text off the end so the expanded sample fits `max_length`; (ids, labels, was_cut).

    Raises SampleTooLong (reason says why) when the cut would split or drop an image, or leave no answer.
    """
    total = expanded_length(ids, image_tokens)
    if total <= max_length:
        return ids, labels, False
    keep, used = 0, 0
    for tok in ids:
        step = image_tokens if tok == IMAGE_TOKEN_INDEX else 1
        if used + step > max_length:
            break
        used += step
        keep += 1
    n_images = ids.count(IMAGE_TOKEN_INDEX)
    if ids[:keep].count(IMAGE_TOKEN_INDEX) < n_images:
        raise SampleTooLong(
            f"needs {total} positions ({len(ids) - n_images} text tokens + {n_images} image(s) x "
            f"{image_tokens} visual tokens) but model_max_length is {max_length}, and cutting it would cut "
            "an image, so the sample is dropped; fix: raise --model_max_length or shorten the text",
            field="conversations",
        )
    if all(lab == IGNORE_INDEX for lab in labels[:keep]):
        raise SampleTooLong(
            f"needs {total} positions but model_max_length is {max_length}, and no answer token would be "
            "left after cutting, so the sample is dropped; fix: raise --model_max_length or shorten the "
            "prompt",
            field="conversations",
        )
    return ids[:keep], labels[:keep], True
