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
    samples = json.loads((tmp_path / "stage2.json").read_text())
    meta = json.loads((tmp_path / "meta.json").read_text())
    present = {
        s["image"]: {f"{o['colour']} {o['shape']}" for o in s["objects"]} for s in meta["scenes"]["train"]
    }
    answers: Counter = Counter()
    asked: dict[str, list[str]] = {}
    for s in samples:
        turns = s["conversations"]
        for q, a in zip(turns[::2], turns[1::2]):
            m = re.search(r"Is there a (\w+ \w+) in the image\?", q["value"])
            if m:
                answers[a["value"]] += 1
                asked.setdefault(s["image"], []).append(m.group(1))
    assert answers["Yes"] == answers["No"]
    for image, cats in asked.items():
        # no category twice per image; pairs run out only when every present category has been asked
        assert len(cats) == len(set(cats)), (image, cats)
        n_yes = len([c for c in cats if c in present[image]])
        assert n_yes == min(3, len(present[image])), (image, cats)
    with pytest.raises(ValueError, match="pope-pairs"):
        generate_dataset(tmp_path / "bad", n_train=2, n_test=1, pope_pairs=4, progress=False)


def test_category_captions_system_turn_and_multi_turn_conversations(tmp_path):
    system = "Answer about the image."
    generate_dataset(
        tmp_path,
        seed=2,
        n_train=30,
        n_test=3,
        turns=9,
        caption_boxes=True,
        caption_order="category",
        system=system,
        progress=False,
    )
    spec = SceneSpec()
    rank = {f"{c} {s}": k for k, (c, s) in enumerate(spec.categories)}
    meta = json.loads((tmp_path / "meta.json").read_text())
    objects = {s["image"]: s["objects"] for s in meta["scenes"]["train"]}
    for s in json.loads((tmp_path / "stage1.json").read_text()):
        named = re.findall(r"(?:small|large) (\w+ \w+) \[", s["conversations"][1]["value"])
        assert sorted(named) == sorted(f"{o['colour']} {o['shape']}" for o in objects[s["image"]])
        assert named == sorted(named, key=rank.__getitem__)
    stage2 = json.loads((tmp_path / "stage2.json").read_text())
    assert len(stage2) == 30  # every question of an image in one conversation
    for s in stage2:
        conv = s["conversations"]
        assert conv[0] == {"from": "system", "value": system}
        assert [t["from"] for t in conv[1:]] == ["human", "gpt"] * (len(conv[1:]) // 2)
        assert conv[1]["value"].startswith("<image>\n") and sum("<image>" in t["value"] for t in conv) == 1
    with pytest.raises(ValueError, match="caption_order"):
        generate_dataset(tmp_path / "bad", n_train=2, n_test=1, caption_order="size", progress=False)
