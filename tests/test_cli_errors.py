"""Every command's bad input: one line naming it, exit code 2, no traceback unless `--debug`; nothing lost."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comm_tower.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, run_command
from comm_tower.eval import runner as comm_eval
from comm_tower.eval.questions import load_questions
from comm_tower.train import cli as comm_train
from comm_tower.zoo import cli as comm_presets
from comm_tower.zoo.tiny_lm import build_tiny_llama

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Commands call logging.basicConfig on the stream pytest captures; later tests get a fresh root."""
    root = logging.getLogger()
    saved = root.handlers[:]
    yield
    root.handlers[:] = saved


def _fails(main, argv, capfd) -> tuple[int, list[str], str]:
    """Run a command's `main` in process: (exit code, the stderr lines that are not log records, all)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip() and not _is_log(line)]
    return stop.value.code, lines, out + err


def _is_log(line: str) -> bool:
    """Log records and progress bars (tqdm's '%|'), which are not error lines."""
    if "%|" in line:
        return True
    return any(f" {level} " in line for level in ("INFO", "WARNING", "DEBUG")) or line.startswith(
        ("INFO", "WARNING")
    )


def _one_error_line(code: int, lines: list[str], prog: str, *says: str) -> str:
    assert code == EXIT_BAD_INPUT
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for text in says:
        assert text in lines[0], (text, lines[0])
    return lines[0]


# ---- the boundary itself -----------------------------------------------------------------------------
def _raiser(exc: BaseException):
    def main(argv):
        raise exc

    return main


def test_bad_input_is_one_line_and_exit_2_and_debug_adds_the_traceback(capfd):
    with pytest.raises(SystemExit) as stop:
        run_command("prog", _raiser(ValueError("sample 3 (field 'image'):\n  bad  value")), [])
    _, err = capfd.readouterr()
    assert stop.value.code == EXIT_BAD_INPUT
    assert err == "prog: error: sample 3 (field 'image'): bad value\n"
    with pytest.raises(SystemExit):
        run_command("prog", _raiser(FileNotFoundError("no such file: x.json")), ["--debug"])
    _, err = capfd.readouterr()
    assert "Traceback (most recent call last)" in err and err.endswith("prog: error: no such file: x.json\n")


def test_a_bug_is_exit_1_with_one_line_asking_for_the_traceback(capfd):
    with pytest.raises(SystemExit) as stop:
        run_command("prog", _raiser(ZeroDivisionError("division by zero")), [])
    _, err = capfd.readouterr()
    assert stop.value.code == EXIT_INTERNAL
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError" in err and "--debug" in err


def test_success_exits_quietly(capfd):
    assert run_command("prog", lambda argv: 0, []) == 0
    assert capfd.readouterr() == ("", "")


# ---- comm-train: the data is checked before any model loads ---------------------------------------------
@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("lm") / "lm")


def _train_argv(lm: Path, data: Path, folder: Path, out: Path) -> list[str]:
    # the tower name is unknown: a data check that ran after the model build would report the tower instead
    return [
        "--model_name_or_path", str(lm), "--vision_tower", "no-such-tower", "--version", "plain",
        "--data_path", str(data), "--image_folder", str(folder), "--output_dir", str(out),
        "--use_cpu", "True", "--report_to", "none", "--max_steps", "1",
    ]  # fmt: skip


def _record(image: str | None = "red.png", answer: str = "Red.") -> dict:
    rec = {"conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": answer}]}
    return {**rec, "image": image} if image else rec


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("missing data file", ["data file", "not found", "--data_path"]),
        ("data path is a folder", ["data file", "is a folder", ".jsonl"]),
        ("missing image folder", ["--image_folder", "does not exist"]),
        ("missing image", ["image 'gone.png' in sample 1", "file not found", "--skip_bad_samples"]),
        ("bad turn", ["sample 0", "conversations[1].from", "unknown speaker"]),
    ],
)
def test_comm_train_data_errors_come_before_any_model_loads(lm, tmp_path, capfd, case, says):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / "red.png")
    data = tmp_path / "data.json"
    records = [_record(), _record("gone.png") if case == "missing image" else _record()]
    if case == "bad turn":
        records[0]["conversations"][1]["from"] = "robot"
    data.write_text(json.dumps(records))
    if case == "missing data file":
        data = tmp_path / "nope.json"
    elif case == "data path is a folder":
        data = folder
    elif case == "missing image folder":
        folder = tmp_path / "no-images"
    out = tmp_path / "out"
    code, lines, everything = _fails(comm_train.main, _train_argv(lm, data, folder, out), capfd)
    _one_error_line(code, lines, "comm-train", *says)
    assert "Traceback" not in everything and "no-such-tower" not in everything
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_comm_train_debug_shows_the_traceback_and_hf_debug_option_still_parses(lm, tmp_path, capfd):
    argv = _train_argv(lm, tmp_path / "nope.json", tmp_path, tmp_path / "out")
    code, _, everything = _fails(comm_train.main, [*argv, "--debug"], capfd)
    assert code == EXIT_BAD_INPUT and "Traceback (most recent call last)" in everything
    assert comm_train.without_debug_flag(["--debug", "underflow_overflow", "--x", "1", "--debug"]) == [
        "--debug",
        "underflow_overflow",
        "--x",
        "1",
    ]


def test_comm_train_entry_point_in_a_subprocess(lm, tmp_path):
    """The real `python -m comm_tower.train`: exit 2 and one error line (log lines aside), no traceback."""
    argv = _train_argv(lm, tmp_path / "nope.json", tmp_path, tmp_path / "out")
    run = subprocess.run(
        [sys.executable, "-m", "comm_tower.train", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    errors = [line for line in run.stderr.splitlines() if line.startswith("comm-train: error:")]
    assert run.returncode == EXIT_BAD_INPUT
    assert len(errors) == 1 and "nope.json" in errors[0]
    assert "Traceback" not in run.stderr


def test_comm_train_bad_flag_is_a_usage_error(lm, tmp_path, capfd):
    argv = [*_train_argv(lm, tmp_path / "d.json", tmp_path, tmp_path / "o"), "--bits", "4"]
    code, lines, _ = _fails(comm_train.main, argv, capfd)
    _one_error_line(code, lines, "comm-train", "--bits 4", "--lora_enable True")


# ---- comm-eval ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tiny_dir, lm, tmp_path_factory) -> Path:
    from _serve_helpers import random_checkpoint

    return random_checkpoint(lm, tmp_path_factory.mktemp("ckpt") / "model")


def _questions(tmp_path: Path, images: list[str]) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (16, 12), (0, 90, 200)).save(folder / "blue.png")
    rows = [
        {"question_id": f"q{i}", "image": name, "text": "Is there a cat?", "label": "no"}
        for i, name in enumerate(images)
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, folder


def _eval_argv(questions: Path, folder: Path, answers: Path, *more: str) -> list[str]:
    return [
        "--question-file", str(questions), "--image-folder", str(folder), "--answers-file", str(answers),
        "--task", "pope_random", "--device", "cpu", "--max-new-tokens", "2", *more,
    ]  # fmt: skip


def test_comm_eval_empty_question_file(tmp_path, capfd):
    empty = tmp_path / "q.jsonl"
    empty.write_text("\n")
    code, lines, everything = _fails(comm_eval.main, _eval_argv(empty, tmp_path, tmp_path / "a.jsonl"), capfd)
    _one_error_line(code, lines, "comm-eval", "q.jsonl", "holds no questions")
    assert "Traceback" not in everything


def test_comm_eval_score_only_without_an_answers_file(tmp_path, capfd):
    questions, folder = _questions(tmp_path, ["blue.png"])
    argv = _eval_argv(questions, folder, tmp_path / "missing.jsonl", "--score-only")
    code, lines, everything = _fails(comm_eval.main, argv, capfd)
    _one_error_line(code, lines, "comm-eval", "answers file not found", "missing.jsonl", "--score-only")
    assert "Traceback" not in everything


def test_comm_eval_missing_image_stops_naming_it_or_is_skipped_and_recorded(checkpoint, tmp_path, capfd):
    questions, folder = _questions(tmp_path, ["blue.png", "gone.png", "blue.png"])
    answers, scores = tmp_path / "answers.jsonl", tmp_path / "scores.json"
    argv = _eval_argv(
        questions, folder, answers, "--model-path", str(checkpoint), "--scores-file", str(scores)
    )
    code, lines, everything = _fails(comm_eval.main, argv, capfd)
    _one_error_line(code, lines, "comm-eval", "image 'gone.png' in sample 1", "--skip_bad_samples")
    assert "Traceback" not in everything
    kept = [json.loads(line)["question_id"] for line in answers.read_text().splitlines()]
    assert kept == ["q0"]  # answered before the bad one: kept for the rerun

    comm_eval.main([*argv, "--skip-bad-samples"])
    records = {r["question_id"]: r for r in map(json.loads, answers.read_text().splitlines())}
    assert sorted(records) == ["q0", "q1", "q2"]
    assert "file not found" in records["q1"]["skipped"] and records["q1"]["text"] == ""
    assert "skipped" not in records["q0"] and "skipped" not in records["q2"]
    written = json.loads(scores.read_text())
    assert written["skipped_question_ids"] == ["q1"]
    merged, skipped = comm_eval.merged_samples(load_questions(questions), answers)
    assert [s["question_id"] for s in merged] == ["q0", "q2"] and skipped == ["q1"]

    before = answers.read_text()
    comm_eval.main([*argv, "--skip-bad-samples"])  # resumes: nothing to answer, the skip is not retried
    assert answers.read_text() == before


def test_comm_presets_bad_preset_names_the_file(tmp_path, capfd):
    bad = tmp_path / "mine.json"
    bad.write_text(
        json.dumps(
            {"name": "mine", "encoders": [{"name": "clip", "family": "clipp", "path": "x", "layers": [-2]}]}
        )
    )
    code, lines, everything = _fails(comm_presets.main, [str(bad)], capfd)
    _one_error_line(code, lines, "comm-presets", "mine.json", "clipp")
    assert "Traceback" not in everything
