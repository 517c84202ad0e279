"""Score answered samples for a task: one metric, or one per category, optionally per split as well."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from comm_tower.eval.metrics import METRICS, Sample, Scores
from comm_tower.eval.tasks import Task

logger = logging.getLogger(__name__)

# image_aspect_ratio used at inference -> the box frame the model's answers are in (see metrics/boxes.py)
# 'square' is LLaVA's name for "the processor as is" (CLIP-style shortest-edge resize + centre crop)
ASPECT_TO_FRAME = {"pad": "pad", "square": "crop", "resize": "resize"}


def _run(metric: str, samples: Sequence[Sample], options: dict[str, Any], frame: str) -> Scores:
    opts = dict(options)
    if metric == "rec":
        opts.setdefault("frame", frame)
    return METRICS.get(metric)(samples, **opts)


def _with_splits(metric: str, samples: Sequence[Sample], task: Task, frame: str, prefix: str = "") -> Scores:
    scores = {prefix + k: v for k, v in _run(metric, samples, task.options, frame).items()}
    if task.split_field:
        groups: dict[str, list[Sample]] = {}
        for s in samples:
            if s.get(task.split_field) is not None:
                groups.setdefault(str(s[task.split_field]), []).append(s)
        if len(groups) > 1:
            for value, group in sorted(groups.items()):
                for k, v in _run(metric, group, task.options, frame).items():
                    scores[f"{prefix}{value}/{k}"] = v
    return scores


def score_samples(task: Task, samples: Sequence[Sample], image_aspect_ratio: str = "pad") -> Scores:
    """All scores of a task over samples that carry a `prediction` plus their ground-truth fields."""
    frame = ASPECT_TO_FRAME.get(image_aspect_ratio)
    if frame is None:
        raise ValueError(
            f"unknown image_aspect_ratio '{image_aspect_ratio}'; known: {', '.join(sorted(ASPECT_TO_FRAME))}"
        )
    if task.metric is not None:
        return _with_splits(task.metric, samples, task, frame)
    by_cat: dict[str, list[Sample]] = {}
    for i, s in enumerate(samples):
        cat = s.get("category")
        if cat is None:
            raise ValueError(f"sample {i} (question_id {s.get('question_id')!r}) has no 'category' field")
        by_cat.setdefault(str(cat), []).append(s)
    scores: Scores = {}
    for cat, group in sorted(by_cat.items()):
        metric = task.by_category.get(cat)
        if metric is None:
            logger.warning("no metric for category '%s' (%d samples); not scored", cat, len(group))
            continue
        scores.update(_with_splits(metric, group, task, frame, prefix=f"{cat}/"))
    return scores
