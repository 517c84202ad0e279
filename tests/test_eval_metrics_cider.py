"""CIDEr-D: a hand-computed case, and agreement with pycocoevalcap's pure-Python Cider on fixed captions."""

import math

import pytest

from comm_tower.eval.metrics import METRICS
from comm_tower.eval.metrics.caption_tokenize import tokenize_caption
from comm_tower.eval.metrics.cider import cider_d

HYPS = [
    "a man riding a wave on top of a surfboard",
    "a cat sitting on a couch",
    "two dogs playing with a frisbee in the park",
    "a plate of food with broccoli and rice",
    "",
    "a red double decker bus driving down a street",
    "zebra zebra zebra",
    "a person holding an umbrella in the rain",
]
REFS = [
    ["a surfer rides a large wave", "a man on a surfboard riding a wave", "someone surfing in the ocean"],
    ["a cat lies on a sofa", "a grey cat sitting on a couch", "a kitten resting on the couch cushions"],
    ["two dogs chase a frisbee", "dogs playing in a grassy park", "a pair of dogs play with a frisbee"],
    ["a plate with broccoli rice and chicken", "a meal of rice and vegetables on a plate"],
    ["a clock tower in a city", "a tall tower with a clock"],
    ["a red bus on a city street", "a double decker bus drives down the road", "a red double decker bus"],
    ["two zebras standing in a field", "zebras grazing on grass"],
    ["a woman with an umbrella walking in the rain", "a person holds an umbrella on a rainy day"],
]


def test_hand_computed_two_images():
    # image 1: hyp equals its only ref -> n=1,2 cosines are 1, n=3,4 empty -> 10 * 2 / 4 = 5
    # image 2: hyp "c" vs ref "c d" -> n=1 cosine 1/sqrt(2), length penalty exp(-1/72)
    score, per_image = cider_d(["a b", "c"], [["a b"], ["c d"]])
    assert per_image[0] == pytest.approx(5.0)
    assert per_image[1] == pytest.approx(10 * math.exp(-1 / 72) / math.sqrt(2) / 4)
    assert score == pytest.approx((per_image[0] + per_image[1]) / 2)


def test_matches_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider

    gts = {i: refs for i, refs in enumerate(REFS)}
    res = {i: [h] for i, h in enumerate(HYPS)}
    ref_score, ref_scores = Cider().compute_score(gts, res)
    score, per_image = cider_d(HYPS, REFS)
    assert score == pytest.approx(ref_score, rel=1e-9, abs=1e-12)
    assert per_image == pytest.approx(list(ref_scores), rel=1e-9, abs=1e-12)
    assert score > 0.1  # the set is not degenerate


def test_metric_scales_and_tokenises():
    samples = [{"prediction": h.capitalize() + ".", "references": r} for h, r in zip(HYPS, REFS)]
    expected, _ = cider_d(HYPS, REFS)
    assert METRICS.get("caption")(samples)["cider"] == pytest.approx(100 * expected)
    assert METRICS.get("reg")(samples)["cider"] == pytest.approx(100 * expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Dog's toy, isn't it?", "a dog 's toy is n't it"),
        ("A black-and-white photo (1950).", "a black-and-white photo 1950"),
        ("  ", ""),
    ],
)
def test_tokenizer(text, expected):
    assert tokenize_caption(text) == expected
