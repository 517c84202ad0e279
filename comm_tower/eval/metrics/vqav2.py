"""VQAv2 (and OK-VQA) accuracy: min(#matching humans / 3, 1), averaged over the leave-one-out subsets.

With the usual ten human answers, each of the ten 9-answer subsets scores min(matches / 3, 1) and the
question scores their mean (so 1 match -> 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1). As in the official script,
the prediction is normalised (see `vqa_normalize.py`), and the human answers are normalised only when they
disagree. A single reference answer degenerates to exact match after normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

from comm_tower.eval.metrics.base import METRICS, Sample, Scores, get_field, prediction_text, require_samples
from comm_tower.eval.metrics.vqa_normalize import (
    normalize_vqa_answer,
    process_digit_article,
    process_punctuation,
)


def _answers(sample: Sample, index: int) -> list[str]:
    raw = get_field(sample, ("answers", "gt_answers", "answer"), index, "vqav2")
    if isinstance(raw, str):
        raw = [raw]  # a single reference answer (short-answer data sets such as the demo's)
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"vqav2: sample {index} 'answers' must be a non-empty list, got {raw!r}")
    answers = [a["answer"] if isinstance(a, dict) else a for a in raw]
    return [str(a).replace("\n", " ").replace("\t", " ").strip() for a in answers]


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Accuracy in [0, 1] of one prediction against the human answers of one question."""
    pred = normalize_vqa_answer(prediction)
    gts = list(answers)
    if len(gts) == 1:
        return float(normalize_vqa_answer(gts[0]) == pred)
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
    scores = []
    for left_out in range(len(gts)):
        matches = sum(a == pred for i, a in enumerate(gts) if i != left_out)
        scores.append(min(1.0, matches / 3.0))
    return sum(scores) / len(scores)


@METRICS.register("vqav2")
def vqav2_scores(samples: Sequence[Sample]) -> Scores:
    """Mean VQA accuracy in percent, overall and per `answer_type` when samples carry one."""
    require_samples(samples, "vqav2")
    per_type: dict[str, list[float]] = {}
    accs = []
    for i, sample in enumerate(samples):
        acc = vqa_accuracy(prediction_text(sample, i, "vqav2"), _answers(sample, i))
        accs.append(acc)
        if sample.get("answer_type"):
            per_type.setdefault(str(sample["answer_type"]), []).append(acc)
    scores = {"accuracy": 100.0 * sum(accs) / len(accs)}
    for kind, values in sorted(per_type.items()):
        scores[f"accuracy_{kind}"] = 100.0 * sum(values) / len(values)
    scores["count"] = float(len(accs))
    return scores
