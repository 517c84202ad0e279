"""Training data: LLaVA-format samples, conversation templates, batching and length grouping."""

from __future__ import annotations

from typing import Any

from comm_tower.data.collator import DataCollatorForSupervisedDataset
from comm_tower.data.dataset import DataArguments, LazySupervisedDataset, SkippedSample
from comm_tower.data.errors import DataError
from comm_tower.data.images import load_image
from comm_tower.data.sampler import ModalityLengthGroupedSampler, modality_grouped_indices
from comm_tower.data.templates import TEMPLATES, Message, get_template

__all__ = [
    "TEMPLATES",
    "DataArguments",
    "DataCollatorForSupervisedDataset",
    "DataError",
    "LazySupervisedDataset",
    "Message",
    "ModalityLengthGroupedSampler",
    "SkippedSample",
    "get_template",
    "load_image",
    "make_supervised_data_module",
    "modality_grouped_indices",
]


def make_supervised_data_module(tokenizer: Any, image_processor: Any, data_args: DataArguments) -> dict:
    """Dataset and collator for a HF Trainer: dict(train_dataset, eval_dataset=None, data_collator)."""
    if not data_args.data_path:
        raise ValueError("data_args.data_path is not set; fix: pass --data_path FILE.json|FILE.jsonl")
    dataset = LazySupervisedDataset(data_args.data_path, tokenizer, image_processor, data_args)
    collator = DataCollatorForSupervisedDataset(tokenizer, model_max_length=None)
    return dict(train_dataset=dataset, eval_dataset=None, data_collator=collator)
