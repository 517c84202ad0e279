"""MME: accuracy and accuracy+ per subtask, summed to the subtask score, summed to perception / cognition.

Follows MME's official `calculation.py`: an answer is "yes"/"no" when it is exactly that (lower-cased),
otherwise its first four characters decide ("yes" in them -> yes, else "no" in them -> no, else "other",
which is always wrong). accuracy = correct questions / questions; accuracy+ = images whose questions (two
per image in MME) are all correct / images; both in percent, so a subtask scores at most 200. Perception
sums the ten perception subtasks, cognition the four cognition subtasks (when present).
"""

from __future__ import annotations

from collections.abc import Sequence

from comm_tower.eval.metrics.base import METRICS, Sample, Scores, get_field, prediction_text, require_samples

PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def parse_mme_answer(text: str) -> str:
    """'yes', 'no' or 'other' by MME's rule."""
    answer = text.lower().strip()
    if answer in ("yes", "no"):
        return answer
    head = answer[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


@METRICS.register("mme")
def mme_scores(samples: Sequence[Sample]) -> Scores:
    """Per-subtask accuracy, accuracy+ and score, plus perception and cognition totals."""
    require_samples(samples, "mme")
    # subtask -> image -> list of per-question correctness
    groups: dict[str, dict[str, list[bool]]] = {}
    for i, sample in enumerate(samples):
        subtask = str(get_field(sample, ("category", "subtask"), i, "mme"))
        image = str(get_field(sample, "image", i, "mme"))
        gt = str(get_field(sample, ("answer", "label"), i, "mme")).strip().lower()
        if gt not in ("yes", "no"):
            raise ValueError(f"mme: sample {i} ground truth must be 'yes' or 'no', got {gt!r}")
        correct = parse_mme_answer(prediction_text(sample, i, "mme")) == gt
        groups.setdefault(subtask, {}).setdefault(image, []).append(correct)
    scores: Scores = {}
    for subtask, images in sorted(groups.items()):
        answers = [c for per_image in images.values() for c in per_image]
        acc = 100.0 * sum(answers) / len(answers)
        acc_plus = 100.0 * sum(all(v) for v in images.values()) / len(images)
        scores[f"{subtask}/accuracy"] = acc
        scores[f"{subtask}/accuracy_plus"] = acc_plus
        scores[f"{subtask}/score"] = acc + acc_plus
    present = set(groups)
    if present & set(PERCEPTION):
        scores["perception"] = sum(scores[f"{t}/score"] for t in PERCEPTION if t in present)
    if present & set(COGNITION):
        scores["cognition"] = sum(scores[f"{t}/score"] for t in COGNITION if t in present)
    unknown = present - set(PERCEPTION) - set(COGNITION)
    if unknown:
        scores["other_subtasks"] = float(len(unknown))
    scores["count"] = float(len(samples))
    return scores
