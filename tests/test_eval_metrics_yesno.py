"""POPE and MME against hand-computed confusion counts, including empty and punctuated answers."""

import pytest

from comm_tower.eval.metrics import METRICS
from comm_tower.eval.metrics.mme import parse_mme_answer
from comm_tower.eval.metrics.pope import normalize_yes_no

POPE_SAMPLES = [
    {"prediction": "Yes.", "label": "yes"},  # TP
    {"prediction": "No, there is not.", "label": "no"},  # TN
    {"prediction": "", "label": "no"},  # empty -> "yes" under the POPE rule: FP
    {"prediction": "There is no dog in the image", "label": "yes"},  # FN
    {"prediction": "NOT at all", "label": "no"},  # TN (case-insensitive); FP with the original rule
    {"prediction": "yes, there is a cat. No doubt.", "label": "yes"},  # first sentence only: TP
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("No.", "no"),
        ("", "yes"),
        ("no", "no"),
        ("Yes, it is not blue. No.", "no"),
        ("Nope", "yes"),
    ],
)
def test_pope_normalisation(text, expected):
    assert normalize_yes_no(text) == expected


def test_pope_scores_match_hand_counts():
    s = METRICS.get("pope")(POPE_SAMPLES)
    # TP=2 TN=2 FP=1 FN=1
    assert s["accuracy"] == pytest.approx(100 * 4 / 6)
    assert s["precision"] == pytest.approx(100 * 2 / 3)
    assert s["recall"] == pytest.approx(100 * 2 / 3)
    assert s["f1"] == pytest.approx(100 * 2 / 3)
    assert s["yes_ratio"] == pytest.approx(50.0)


def test_pope_case_sensitive_reproduces_original_script():
    s = METRICS.get("pope")(POPE_SAMPLES, case_sensitive=True)
    # "NOT at all" becomes yes: TP=2 TN=1 FP=2 FN=1
    p, r = 2 / 4, 2 / 3
    assert s["accuracy"] == pytest.approx(50.0)
    assert s["precision"] == pytest.approx(100 * p)
    assert s["f1"] == pytest.approx(100 * 2 * p * r / (p + r))
    assert s["yes_ratio"] == pytest.approx(100 * 4 / 6)


def test_pope_bad_label_names_the_sample():
    with pytest.raises(ValueError, match="sample 1"):
        METRICS.get("pope")([{"prediction": "yes", "label": "yes"}, {"prediction": "yes", "label": "maybe"}])
    with pytest.raises(ValueError, match="no field"):
        METRICS.get("pope")([{"prediction": "yes"}])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Yes", "yes"), ("Yes, there is.", "yes"), ("Nope", "no"), ("", "other"), ("maybe no", "other")],
)
def test_mme_answer_parsing(text, expected):
    assert parse_mme_answer(text) == expected


def test_mme_scores_match_hand_computation():
    rows = [
        ("existence", "a.jpg", "Yes", "yes"),
        ("existence", "a.jpg", "No.", "no"),
        ("existence", "b.jpg", "yes", "yes"),
        ("existence", "b.jpg", "", "no"),  # empty -> other -> wrong
        ("count", "c.jpg", "Yes, there are two.", "yes"),
        ("count", "c.jpg", "Nope", "no"),
        ("code_reasoning", "d.png", "maybe", "yes"),
        ("code_reasoning", "d.png", "no", "no"),
    ]
    samples = [{"category": c, "image": im, "prediction": p, "answer": a} for c, im, p, a in rows]
    s = METRICS.get("mme")(samples)
    assert s["existence/accuracy"] == pytest.approx(75.0)
    assert s["existence/accuracy_plus"] == pytest.approx(50.0)
    assert s["existence/score"] == pytest.approx(125.0)
    assert s["count/score"] == pytest.approx(200.0)
    assert s["code_reasoning/score"] == pytest.approx(50.0)
    assert s["perception"] == pytest.approx(325.0)
    assert s["cognition"] == pytest.approx(50.0)
