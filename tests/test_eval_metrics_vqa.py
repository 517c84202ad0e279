"""VQAv2 accuracy: official normalisation and the leave-one-out min(#humans/3, 1) rule."""

import pytest

from comm_tower.eval.metrics import METRICS
from comm_tower.eval.metrics.vqa_normalize import normalize_vqa_answer
from comm_tower.eval.metrics.vqav2 import vqa_accuracy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two.", "2"),
        ("The dog", "dog"),
        ("  Yes!\n", "yes"),
        ("isnt", "isn't"),
        ("1,000", "1000"),
        ("3.5", "3.5"),
        ("black-and-white", "black and white"),
        ("a man's hat", "man's hat"),
        ("none", "0"),
        ("", ""),
    ],
)
def test_normalisation(text, expected):
    assert normalize_vqa_answer(text) == expected


@pytest.mark.parametrize(("k", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_rule(k, expected):
    # hand-computed: k*min(1,(k-1)/3) + (10-k)*min(1,k/3), over 10
    answers = ["cat"] * k + ["dog"] * (10 - k)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_number_words_and_punctuation_in_prediction():
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    # answers disagree -> they are normalised too: "Two" -> "2"
    assert vqa_accuracy("2", ["Two"] * 3 + ["three"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("", ["yes"] * 10) == 0.0


def test_unanimous_answers_are_not_normalised_as_in_official_script():
    assert vqa_accuracy("yes", ["Yes"] * 10) == 0.0


def test_corpus_score_and_answer_types():
    samples = [
        {"prediction": "Yes.", "answers": ["yes"] * 10, "answer_type": "yes/no"},
        {
            "prediction": "two",
            "answers": [{"answer": "2"}] * 2 + [{"answer": "3"}] * 8,
            "answer_type": "number",
        },
    ]
    s = METRICS.get("vqav2")(samples)
    assert s["accuracy"] == pytest.approx(100 * (1.0 + 0.6) / 2)
    assert s["accuracy_number"] == pytest.approx(60.0)
    assert s["accuracy_yes/no"] == pytest.approx(100.0)


def test_missing_answers_names_sample():
    with pytest.raises(ValueError, match="sample 0"):
        METRICS.get("vqav2")([{"prediction": "x", "answers": []}])


def test_single_reference_is_normalised_exact_match():
    assert vqa_accuracy("Red.", ["red"]) == 1.0
    assert vqa_accuracy("three", ["3"]) == 1.0
    assert vqa_accuracy("blue", ["red"]) == 0.0
