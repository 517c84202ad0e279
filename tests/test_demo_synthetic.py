"""The demo's synthetic data: deterministic, balanced, boxes true to the pixels, held-out images unseen."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comm_tower.demo.scenes import COLOURS, SceneSpec
from comm_tower.demo.synthetic import generate_dataset, main

N_TRAIN, N_TEST = 60, 18
BOX_RE = re.compile(r"\[(\d\.\d\d), (\d\.\d\d), (\d\.\d\d), (\d\.\d\d)\]")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    main(["--out", str(out), "--seed", "3", "--train", str(N_TRAIN), "--test", str(N_TEST)])
    return out


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _questions(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_same_seed_gives_identical_files_and_another_seed_differs(data, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, seed=3, n_train=N_TRAIN, n_test=N_TEST, progress=False)
    assert _digest(again) == _digest(data)
    other = tmp_path / "other"
    generate_dataset(other, seed=4, n_train=N_TRAIN, n_test=N_TEST, progress=False)
    a, b = _digest(data), _digest(other)
    assert a.keys() == b.keys()
    assert a["stage2.json"] != b["stage2.json"]
    differing_images = [k for k in a if k.startswith("images/") and a[k] != b[k]]
    assert len(differing_images) > (N_TRAIN + N_TEST) // 2


def test_files_follow_the_llava_formats(data):
    for name in ("stage1.json", "stage2.json"):
        samples = json.loads((data / name).read_text())
        assert samples, name
        for s in samples:
            assert (data / s["image"]).is_file()
            conv = s["conversations"]
            assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
            assert conv[0]["value"].startswith("<image>\n")
            assert sum(t["value"].count("<image>") for t in conv) == 1
    assert len(json.loads((data / "stage1.json").read_text())) == N_TRAIN
    qs = _questions(data)
    assert [q["question_id"] for q in qs] == list(range(len(qs)))
    for q in qs:
        assert set(q) >= {"question_id", "image", "text", "answer", "category"}
        assert q["image"].startswith("images/test/") and "<image>" not in q["text"]
    assert Counter(q["category"] for q in qs) == {
        "pope": 2 * N_TEST,
        "rec": N_TEST,
        "attribute": N_TEST,
        "count": N_TEST,
    }


def test_yes_no_answers_are_balanced_per_pope_strategy(data):
    per_subset = Counter((q["subset"], q["answer"]) for q in _questions(data) if q["category"] == "pope")
    for strategy in ("random", "popular", "adversarial"):
        assert per_subset[(strategy, "Yes")] == per_subset[(strategy, "No")] == N_TEST // 3
    train_answers = Counter(
        t["value"]
        for s in json.loads((data / "stage2.json").read_text())
        for t in s["conversations"]
        if t["from"] == "gpt" and t["value"] in ("Yes", "No")
    )
    assert train_answers["Yes"] == train_answers["No"] == N_TRAIN


def test_boxes_lie_in_the_image_and_bound_exactly_the_objects_pixels(data):
    meta = json.loads((data / "meta.json").read_text())
    size = meta["params"]["spec"]["image_size"]
    for split in ("train", "test"):
        for scene in meta["scenes"][split]:
            img = _pixels(data / scene["image"])
            assert img.shape == (size, size, 3)
            for colour, rgb in COLOURS.items():
                mask = (img == np.array(rgb, dtype=np.uint8)).all(-1)
                objs = [o for o in scene["objects"] if o["colour"] == colour]
                inside = np.zeros_like(mask)
                for o in objs:
                    x1, y1, x2, y2 = o["box_px"]
                    inside[y1:y2, x1:x2] = True
                    ys, xs = np.nonzero(mask[y1:y2, x1:x2])
                    # the box is tight: the colour's pixels touch all four sides
                    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)
                    bx = np.array(o["box"]) * size
                    assert np.all(np.abs(bx - np.array(o["box_px"])) <= 0.005 * size + 1e-6)
                    assert 0.0 <= o["box"][0] < o["box"][2] <= 1.0 and 0.0 <= o["box"][1] < o["box"][3] <= 1.0
                assert not (mask & ~inside).any(), f"{scene['image']}: {colour} pixels outside its boxes"


def test_answers_agree_with_the_scene(data):
    meta = json.loads((data / "meta.json").read_text())
    scenes = {s["image"]: s["objects"] for s in meta["scenes"]["test"]}
    for q in _questions(data):
        objs = scenes[q["image"]]
        if q["category"] == "pope":
            colour, shape = re.match(r"Is there a (\w+) (\w+) in the image\?", q["text"]).groups()
            present = any(o["colour"] == colour and o["shape"] == shape for o in objs)
            assert q["answer"] == ("Yes" if present else "No")
            if q["subset"] == "adversarial" and not present:
                assert any(o["colour"] == colour or o["shape"] == shape for o in objs)
        elif q["category"] == "rec":
            size, colour, shape = re.match(
                r"Give the bounding box of the (\w+) (\w+) (\w+)\.", q["text"]
            ).groups()
            (target,) = [o for o in objs if (o["size"], o["colour"], o["shape"]) == (size, colour, shape)]
            assert [float(v) for v in BOX_RE.fullmatch(q["answer"]).groups()] == target["box"]
            assert q["bbox"] == target["box_px"]
            assert q["width"] == q["height"] == meta["params"]["spec"]["image_size"]
        elif q["category"] == "attribute":
            box = [float(v) for v in BOX_RE.search(q["text"]).groups()]
            (target,) = [o for o in objs if o["box"] == box]
            assert q["answer"] == target[q["subset"]]
        else:
            m = re.match(r"How many (\w+) (objects )?are", q["text"])
            word = m.group(1)
            want = sum(word == "objects" or o["colour"] == word or o["shape"] + "s" == word for o in objs)
            assert q["answer"] == str(want)


def test_popular_negatives_are_the_most_frequent_absent_category(data):
    meta = json.loads((data / "meta.json").read_text())
    freq = meta["category_frequencies"]
    scenes = {s["image"]: s["objects"] for s in meta["scenes"]["test"]}
    for q in _questions(data):
        if q["category"] == "pope" and q["subset"] == "popular" and q["answer"] == "No":
            present = {f"{o['colour']} {o['shape']}" for o in scenes[q["image"]]}
            asked = " ".join(re.match(r"Is there a (\w+) (\w+)", q["text"]).groups())
            assert freq[asked] == max(v for k, v in freq.items() if k not in present)


def test_held_out_images_never_appear_in_training(data):
    def hashes(split: str) -> set[str]:
        return {
            hashlib.sha256(_pixels(p).tobytes()).hexdigest() for p in (data / "images" / split).glob("*.png")
        }

    train, test = hashes("train"), hashes("test")
    assert len(test) == N_TEST
    assert not train & test


def test_bad_spec_names_the_field():
    with pytest.raises(ValueError, match=r"SceneSpec.colours: unknown colour 'purple'"):
        SceneSpec(colours=("red", "purple"))
    with pytest.raises(ValueError, match=r"SceneSpec.image_size"):
        SceneSpec(image_size=100, grid=3)


def test_several_yes_no_pairs_per_training_image_stay_balanced(tmp_path):
    generate_dataset(tmp_path, seed=1, n_train=20, n_test=3, pope_pairs=3, progress=False)
    answers = Counter(
        t["value"]
        for s in json.loads((tmp_path / "stage2.json").read_text())
        for t in s["conversations"]
        if t["from"] == "gpt" and t["value"] in ("Yes", "No")
    )
    assert answers["Yes"] == answers["No"] == 3 * 20
    with pytest.raises(ValueError, match="pope-pairs"):
        generate_dataset(tmp_path / "bad", n_train=2, n_test=1, pope_pairs=4, progress=False)
