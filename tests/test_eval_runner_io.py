"""comm-eval plumbing without a model: question/answer files, resuming, task scoring, the paper table."""

import json

import pytest

from comm_tower.eval.metrics import METRICS
from comm_tower.eval.questions import answered_ids, append_answers, load_questions
from comm_tower.eval.report import results_table
from comm_tower.eval.runner import build_parser, run
from comm_tower.eval.scoring import score_samples
from comm_tower.eval.tasks import TASKS


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_questions_validated_and_annotations_merged(tmp_path):
    q = tmp_path / "q.jsonl"
    _write_jsonl(
        q, [{"question_id": 1, "image": "a.png", "text": "Is there a cat?"}, {"question_id": 2, "text": "x"}]
    )
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([{"question_id": 1, "label": "yes"}, {"question_id": 2, "label": "no"}]))
    merged = load_questions(q, ann)
    assert [m["label"] for m in merged] == ["yes", "no"]
    assert merged[0]["text"] == "Is there a cat?"

    _write_jsonl(q, [{"question_id": 1, "text": "a"}, {"question_id": 1, "text": "b"}])
    with pytest.raises(ValueError, match="question 1 repeats question_id 1"):
        load_questions(q)
    _write_jsonl(q, [{"question_id": 1}])
    with pytest.raises(ValueError, match="question 0 has no 'text'"):
        load_questions(q)
    q.write_text('{"question_id": 1, "text": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2"):
        load_questions(q)


def test_answered_ids_drops_a_cut_off_last_line(tmp_path):
    a = tmp_path / "answers.jsonl"
    assert answered_ids(a) == set()
    append_answers(a, [{"question_id": 1, "text": "yes"}, {"question_id": "b", "text": "no"}])
    with a.open("a") as f:
        f.write('{"question_id": 3, "te')  # killed mid-write
    assert answered_ids(a) == {"1", "b"}
    assert a.read_text().count("\n") == 2  # the partial line is gone, so appending stays valid JSONL


def test_demo_task_routes_categories_to_metrics():
    samples = [
        {"category": "pope", "subset": "random", "prediction": "Yes", "answer": "Yes"},
        {"category": "pope", "subset": "popular", "prediction": "Yes", "answer": "No"},
        {
            "category": "rec",
            "subset": "box",
            "prediction": "[0,0,0.5,0.5]",
            "bbox": [0, 0, 32, 32],
            "width": 64,
            "height": 64,
        },
        {"category": "count", "subset": "all", "prediction": "Three.", "answer": "3"},
        {"category": "attribute", "subset": "colour", "prediction": "blue", "answer": "red"},
    ]
    scores = score_samples(TASKS.get("demo"), samples)
    pope = METRICS.get("pope")(samples[:2])
    assert scores["pope/accuracy"] == pope["accuracy"] == 50.0
    assert scores["pope/random/accuracy"] == 100.0 and scores["pope/popular/accuracy"] == 0.0
    assert scores["rec/accuracy"] == 100.0
    assert scores["count/accuracy"] == 100.0 and scores["attribute/accuracy"] == 0.0


def test_table_prints_paper_numbers():
    table = results_table(
        "pope_random", TASKS.get("pope_random"), {"accuracy": 80.0, "f1": 79.5, "yes_ratio": 50.0}, "comm"
    )
    assert "80.00" in table and "COMM-7B 87.29" in table and "Shikra-7B 86.90" in table
    mme = results_table("mme", TASKS.get("mme"), {"perception": 1000.0, "cognition": 300.0}, "clip")
    assert "clip (controlled) 1107.80" in mme and "clip (controlled) 209.60" in mme


def test_score_only_cli(tmp_path, capsys):
    q, a = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    _write_jsonl(
        q, [{"question_id": i, "text": "?", "label": lab} for i, lab in enumerate(["yes", "no", "no"])]
    )
    _write_jsonl(a, [{"question_id": i, "text": t} for i, t in enumerate(["Yes.", "No", "Yes"])])
    args = build_parser().parse_args(
        [
            "--question-file",
            str(q),
            "--answers-file",
            str(a),
            "--task",
            "pope_random",
            "--score-only",
            "--scores-file",
            str(tmp_path / "s.json"),
        ]
    )
    scores = run(args)
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert json.loads((tmp_path / "s.json").read_text())["accuracy"] == pytest.approx(200 / 3)
    assert "pope_random" in capsys.readouterr().out

    _write_jsonl(a, [{"question_id": 0, "text": "Yes"}])
    with pytest.raises(ValueError, match="2 question"):
        run(args)


def test_rec_score_only_reads_image_sizes(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (200, 100)).save(tmp_path / "wide.png")
    q, a = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    _write_jsonl(q, [{"question_id": 0, "image": "wide.png", "text": "the dog", "bbox": [20, 10, 120, 60]}])
    _write_jsonl(a, [{"question_id": 0, "text": "[0.1, 0.3, 0.6, 0.55]"}])  # the box in the padded frame
    argv = [
        "--question-file",
        str(q),
        "--answers-file",
        str(a),
        "--image-folder",
        str(tmp_path),
        "--task",
        "refcoco_val",
        "--score-only",
        "--all-scores",
    ]
    assert run(build_parser().parse_args(argv))["accuracy"] == 100.0
    out = capsys.readouterr().out
    assert "COMM-7B 91.73" in out and "mean_iou" in out
    # the same answer read in the centre-crop frame lands elsewhere (IoU 0.25)
    assert run(build_parser().parse_args([*argv, "--image-aspect-ratio", "square"]))["accuracy"] == 0.0
