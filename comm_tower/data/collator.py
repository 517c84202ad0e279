"""Batch samples for the model: pad the text, gather every image of the batch into one tensor.

The batch is `{"input_ids", "labels", "attention_mask", "images"}`:
- `input_ids` `[B, L]` padded with the tokenizer's pad id (its unk/eos/0 if it has none: the mask, not the
  pad id, says what is padding), `labels` padded with IGNORE_INDEX, `attention_mask` bool `[B, L]`.
- `images` `[M, 3, S, S]`: the batch's M images in the order their IMAGE_TOKEN_INDEX ids appear when
  reading `input_ids` row by row. Text-only samples add no image (no dummy), so a text-only batch gives
  `M = 0`; image counts per row are `(input_ids == IMAGE_TOKEN_INDEX).sum(1)`. Absent when not multimodal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from comm_tower.constants import IGNORE_INDEX


def pad_id_of(tokenizer: Any) -> int:
    """The id used for padding: pad, else unk, else eos, else 0 (padding is masked out anyway)."""
    for name in ("pad_token_id", "unk_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


@dataclass
class DataCollatorForSupervisedDataset:
    """Pads a list of dataset items into one batch (right padding, cut to model_max_length)."""

    tokenizer: Any
    model_max_length: int | None = None

    def __call__(self, instances: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Collate `instances` into the batch dict the model's forward takes."""
        limit = self.model_max_length
        ids = [x["input_ids"][:limit] if limit else x["input_ids"] for x in instances]
        labels = [x["labels"][: len(i)] for x, i in zip(instances, ids)]
        width = max(len(i) for i in ids)
        batch_ids = torch.full((len(ids), width), pad_id_of(self.tokenizer), dtype=torch.long)
        batch_labels = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for row, (i, lab) in enumerate(zip(ids, labels)):
            batch_ids[row, : len(i)] = i
            batch_labels[row, : len(lab)] = lab
            mask[row, : len(i)] = True
        batch = {"input_ids": batch_ids, "labels": batch_labels, "attention_mask": mask}
        if "images" in instances[0]:
            batch["images"] = torch.cat([x["images"] for x in instances], dim=0)
        return batch
