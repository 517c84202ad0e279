"""A lazy supervised dataset over LLaVA-format data: checks samples early, loads images on demand.

Each item is `{"input_ids", "labels", "images"}`: `images` is a float tensor `[n, 3, S, S]` holding the
sample's n images in the order of its image tokens (n = 0 for a text-only sample; the key is absent when
the run is not multimodal).

Bad samples raise `DataError` (sample index, field, fix). With `skip_bad_samples`, a bad sample is recorded
(`dataset.skipped`) and the next good sample is served in its place. A sample too long for
`model_max_length` is shortened when only text is cut, and otherwise dropped the same way; both are logged.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from comm_tower.data.errors import DataError
from comm_tower.data.images import WHITE, load_image
from comm_tower.data.records import Sample, parse_record, read_records
from comm_tower.data.templates import Message, get_template, normalize_image_tags
from comm_tower.data.truncation import SampleTooLong, truncate
from comm_tower.processor import pad_to_square

logger = logging.getLogger(__name__)

ASPECT_RATIOS = ("square", "pad")
_NO_LIMIT = 10**8  # tokenizers without a real limit report ~1e30


@dataclass
class DataArguments:
    """Data options; names follow LLaVA's where the meaning is the same."""

    data_path: str | None = field(default=None, metadata={"help": "LLaVA JSON list or JSONL file."})
    lazy_preprocess: bool = field(default=True, metadata={"help": "Kept for LLaVA scripts; always lazy."})
    is_multimodal: bool = field(default=True, metadata={"help": "Load images; False trains on text only."})
    image_folder: str | None = field(default=None, metadata={"help": "Folder the 'image' paths are under."})
    image_aspect_ratio: str = field(default="square", metadata={"help": "'pad' (to square) or 'square'."})
    template: str = field(default="vicuna_v1", metadata={"help": "plain | vicuna_v1 | chat_template."})
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System prompt of samples that do not open with a 'system' turn (default: the "
            "template's own); recorded in the checkpoint, so chat and evaluation use it too."
        },
    )
    model_max_length: int | None = field(
        default=None, metadata={"help": "Max positions incl. visual tokens; default: the tokenizer's."}
    )
    image_tokens: int = field(
        default=1, metadata={"help": "Positions one image takes in the LLM (tower.num_patches)."}
    )
    skip_bad_samples: bool = field(default=False, metadata={"help": "Skip and report bad samples."})
    skip_log_path: str | None = field(
        default=None, metadata={"help": "JSONL file skipped samples are appended to (all workers)."}
    )
    check_image_files: bool = field(default=True, metadata={"help": "Check image files exist up front."})

    def __post_init__(self) -> None:
        if self.image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(
                f"image_aspect_ratio '{self.image_aspect_ratio}' is not supported; use one of {ASPECT_RATIOS}"
            )
        if self.image_tokens < 1:
            raise ValueError(f"image_tokens must be >= 1, got {self.image_tokens}")


@dataclass(frozen=True)
class SkippedSample:
    """A sample left out of training, and why."""

    index: int
    field: str | None
    reason: str


class LazySupervisedDataset(Dataset):
    """LLaVA-format samples, tokenized with a conversation template and loaded lazily."""

    def __init__(
        self, data_path: str | Path, tokenizer: Any, image_processor: Any | None, data_args: DataArguments
    ) -> None:
        """Read and check every sample (structure, tags, image files); nothing is tokenized or decoded yet.

        `image_processor` may be attached later (`comm-train` checks the data before it loads any model).
        """
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.args = data_args
        self.template = get_template(data_args.template)
        _check_image_folder(data_args)
        limit = data_args.model_max_length or getattr(tokenizer, "model_max_length", None) or _NO_LIMIT
        self.max_length = min(int(limit), _NO_LIMIT)
        self._skipped: dict[int, SkippedSample] = {}
        self.samples: list[Sample] = []
        records = read_records(data_path)
        for index, record in enumerate(tqdm(records, desc="checking samples", disable=len(records) < 10_000)):
            try:
                sample = parse_record(record, index, data_args.is_multimodal)
                self._check_files(sample)
            except DataError as err:
                self._reject(err.at(index=index))
                continue
            self.samples.append(sample)
        if not self.samples:
            raise DataError(
                f"no usable samples (of {len(records)}); see the errors above", subject=str(data_path)
            )
        n_img = sum(1 for s in self.samples if s.images)
        logger.info(
            "%s: %d samples (%d with images, %d text-only), %d skipped",
            data_path,
            len(self.samples),
            n_img,
            len(self.samples) - n_img,
            len(self._skipped),
        )

    # ----- system prompt -----
    def messages(self, sample: Sample) -> list[Message]:
        """The sample's turns, opened by `--system_prompt` when it has no system turn of its own."""
        messages = list(sample.messages)
        if self.args.system_prompt is not None and messages[0].role != "system":
            messages.insert(0, Message("system", self.args.system_prompt))
        return messages

    def common_system_prompt(self) -> str | None:
        """The system prompt most samples train with (None: the template's own); a mix is logged."""
        counts: Counter[str | None] = Counter()
        for sample in self.samples:
            first = self.messages(sample)[0]
            counts[first.content if first.role == "system" else None] += 1
        (prompt, n), *others = counts.most_common()
        if others:
            logger.warning(
                "samples train with %d different system prompts; %d of %d use %r, which the checkpoint "
                "records for chat and evaluation",
                len(counts),
                n,
                len(self.samples),
                prompt,
            )
        return prompt

    # ----- bad samples -----
    def _reject(self, err: DataError) -> None:
        """Raise `err`, or record it when skipping (a too-long sample is always dropped, never raised)."""
        if not (self.args.skip_bad_samples or isinstance(err, SampleTooLong)):
            raise err
        logger.warning("skipping %s", err)
        entry = SkippedSample(err.index if err.index is not None else -1, err.field, str(err))
        self._skipped[entry.index] = entry
        if self.args.skip_log_path:
            with open(self.args.skip_log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry.__dict__) + "\n")

    @property
    def skipped(self) -> list[SkippedSample]:
        """Samples skipped so far (with a skip_log_path, also those skipped in DataLoader workers)."""
        entries = dict(self._skipped)
        log = self.args.skip_log_path
        if log and os.path.isfile(log):
            with open(log, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        entry = SkippedSample(**json.loads(line))
                        entries.setdefault(entry.index, entry)
        return [entries[i] for i in sorted(entries)]

    @property
    def num_skipped(self) -> int:
        """How many samples were skipped so far."""
        return len(self.skipped)

    def skip_report(self) -> str:
        """One line per skipped sample, for the end-of-run summary."""
        lines = [f"skipped {self.num_skipped} sample(s)"]
        lines += [f"  sample {s.index}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    # ----- lengths for grouping -----
    @property
    def lengths(self) -> list[int]:
        """Rough length of each sample: words, plus the visual tokens of its images."""
        per_image = self.args.image_tokens if self.args.image_tokens > 1 else 128
        return [s.words + per_image * len(s.images) for s in self.samples]

    @property
    def modality_lengths(self) -> list[int]:
        """Words per sample, positive for samples with images and negative for text-only ones."""
        return [s.words if s.images else -s.words for s in self.samples]

    # ----- items -----
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        for step in range(len(self.samples)):
            sample = self.samples[(i + step) % len(self.samples)]
            if sample.index in self._skipped:
                continue
            try:
                return self._build(sample)
            except DataError as err:
                self._reject(err.at(index=sample.index))
        raise RuntimeError(f"every sample was skipped:\n{self.skip_report()}")

    def _check_files(self, sample: Sample) -> None:
        if not self.args.check_image_files:
            return
        for k, rel in enumerate(sample.images):
            path = self._image_path(rel)
            if not os.path.isfile(path):
                field_name = "image" if len(sample.images) == 1 else f"image[{k}]"
                raise DataError(
                    f"file not found at {os.path.abspath(path)}; fix: check --image_folder and the path, "
                    "or run with --skip_bad_samples",
                    sample.index,
                    field_name,
                    f"image '{rel}'",
                )

    def _image_path(self, rel: str) -> str:
        return os.path.join(self.args.image_folder, rel) if self.args.image_folder else rel

    def _pixels(self, sample: Sample) -> torch.Tensor:
        """The sample's images as `[n, 3, S, S]` (n may be 0)."""
        if self.image_processor is None:
            raise RuntimeError("the data set has no image_processor yet; set dataset.image_processor first")
        size = self.image_processor.crop_size
        if not sample.images:
            return torch.zeros(0, 3, size["height"], size["width"])
        pad = self.args.image_aspect_ratio == "pad"
        images = []
        for k, rel in enumerate(sample.images):
            field_name = "image" if len(sample.images) == 1 else f"image[{k}]"
            # transparency goes onto white, as at inference (comm_tower.eval loads with the same default)
            img = load_image(self._image_path(rel), sample.index, field_name, background=WHITE)
            images.append(pad_to_square(img, self.image_processor.image_mean) if pad else img)
        return self.image_processor.preprocess(images, return_tensors="pt")["pixel_values"]

    def _build(self, sample: Sample) -> dict[str, torch.Tensor]:
        multimodal = self.args.is_multimodal
        pixels = self._pixels(sample) if multimodal else None
        try:
            messages = normalize_image_tags(self.messages(sample), len(sample.images))
            ids, labels = self.template.encode(messages, self.tokenizer)
        except ValueError as err:
            raise DataError(str(err), sample.index, "conversations") from None
        ids, labels, cut = truncate(ids, labels, self.max_length, self.args.image_tokens)
        if cut:
            logger.warning("sample %d: text cut to fit model_max_length %d", sample.index, self.max_length)
        item = {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels)}
        if multimodal:
            item["images"] = pixels
        return item


def _check_image_folder(data_args: DataArguments) -> None:
    """A missing `--image_folder` is named as such (not as one missing image per sample)."""
    folder = data_args.image_folder
    if not (data_args.is_multimodal and folder and data_args.check_image_files):
        return
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise DataError(
            f"{what} ({os.path.abspath(folder)}); fix: pass the folder the samples' 'image' paths are "
            "relative to",
            subject=f"--image_folder '{folder}'",
        )
