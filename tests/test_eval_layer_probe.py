"""Layer probe: layer-list parsing, and a tiny end-to-end probe (train, answer, score, plot, resume)."""

import json
import math

import pytest
from PIL import Image

from comm_tower.eval.layer_probe import build_parser, parse_layers, run_probe
from comm_tower.eval.metrics import METRICS


def test_parse_layers():
    assert parse_layers(None, 4) == [1, 2, 3, 4]
    assert parse_layers("2-24:2", 24) == list(range(2, 25, 2))
    assert parse_layers("12,4,8,4", 24) == [4, 8, 12]
    with pytest.raises(ValueError, match="out of range"):
        parse_layers("0-3", 4)
    with pytest.raises(ValueError, match="not N, A-B"):
        parse_layers("x", 4)


@pytest.mark.slow
def test_probe_end_to_end_and_resume(tiny_dir, tmp_path):
    from comm_tower.demo.synthetic import generate_dataset
    from comm_tower.zoo.tiny_lm import build_tiny_llama

    data = generate_dataset(tmp_path / "demo", n_train=4, n_test=1, progress=False)
    lm = build_tiny_llama(tmp_path / "lm")
    out = tmp_path / "probe"
    argv = [
        "--llm",
        str(lm),
        "--preset",
        "tiny-clip",
        "--layers",
        "1,3",
        "--train-data",
        str(data["stage2.json"]),
        "--question-file",
        str(data["test.jsonl"]),
        "--image-folder",
        str(tmp_path / "demo"),
        "--task",
        "demo",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        "--projector-type",
        "linear",
        "--out",
        str(out),
    ]
    results = run_probe(build_parser().parse_args(argv))

    assert sorted(results["layers"], key=int) == ["1", "3"]
    assert results["score_key"] == "pope/accuracy"
    questions = [json.loads(line) for line in data["test.jsonl"].read_text().splitlines()]
    for layer in (1, 3):
        entry = results["layers"][str(layer)]
        assert len(entry["losses"]) == 2 and all(math.isfinite(v) for v in entry["losses"])
        preset = json.loads((out / f"probe-clip-L{layer:02d}.json").read_text())
        assert [e["name"] for e in preset["encoders"]] == ["clip"] and preset["encoders"][0]["layers"] == [
            layer
        ]
        answers = {}
        for line in (out / f"layer_{layer:02d}" / "answers.jsonl").read_text().splitlines():
            a = json.loads(line)
            answers[a["question_id"]] = a["text"]
        pope = [
            {"prediction": answers[q["question_id"]], "answer": q["answer"]}
            for q in questions
            if q["category"] == "pope"
        ]
        assert entry["score"] == pytest.approx(METRICS.get("pope")(pope)["accuracy"])
    with Image.open(out / "layer_probe.png") as png:
        assert png.format == "PNG" and png.size == (600, 350)

    stamp = (out / "layer_01" / "answers.jsonl").stat().st_mtime_ns
    again = run_probe(build_parser().parse_args(argv))  # finished layers are not trained or answered again
    assert again["layers"] == results["layers"]
    assert (out / "layer_01" / "answers.jsonl").stat().st_mtime_ns == stamp
