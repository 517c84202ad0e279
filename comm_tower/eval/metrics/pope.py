"""POPE (object hallucination): yes/no accuracy, precision, recall, F1 and yes-ratio, "yes" being positive.

Answer normalisation follows the POPE authors' `evaluate.py` (also used by LLaVA's `eval_pope.py`): keep the
text before the first '.', drop commas, split on spaces; the answer is "no" if a word is "no" or "not",
otherwise "yes" (an empty answer is therefore "yes"). Their script compares words case-sensitively ("No",
"no", "not"); we compare case-insensitively by default so that "NOT" or "Not" count as no, which only
changes answers in capitals. `case_sensitive=True` reproduces the original script exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from comm_tower.eval.metrics.base import METRICS, Sample, Scores, get_field, prediction_text, require_samples


def normalize_yes_no(text: str, case_sensitive: bool = False) -> str:
    """Map a free-form answer to 'yes' or 'no' with the POPE rule."""
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    if case_sensitive:
        negative = "No" in words or "no" in words or "not" in words
    else:
        lowered = {w.lower() for w in words}
        negative = "no" in lowered or "not" in lowered
    return "no" if negative else "yes"


def _label(sample: Sample, index: int) -> str:
    raw = get_field(sample, ("label", "answer"), index, "pope")
    label = str(raw).strip().lower().rstrip(".")
    if label not in ("yes", "no"):
        raise ValueError(f"pope: sample {index} ground truth must be 'yes' or 'no', got {raw!r}")
    return label


@METRICS.register("pope")
def pope_scores(samples: Sequence[Sample], case_sensitive: bool = False) -> Scores:
    """Accuracy, precision, recall, F1 and yes-ratio (all in percent) over POPE samples."""
    require_samples(samples, "pope")
    tp = fp = tn = fn = 0
    for i, sample in enumerate(samples):
        pred = normalize_yes_no(prediction_text(sample, i, "pope"), case_sensitive)
        label = _label(sample, i)
        if pred == "yes":
            tp, fp = (tp + 1, fp) if label == "yes" else (tp, fp + 1)
        else:
            tn, fn = (tn + 1, fn) if label == "no" else (tn, fn + 1)
    total = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100.0 * (tp + tn) / total,
        "precision": 100.0 * precision,
        "recall": 100.0 * recall,
        "f1": 100.0 * f1,
        "yes_ratio": 100.0 * (tp + fp) / total,
        "count": float(total),
    }
