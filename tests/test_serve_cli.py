"""comm-chat as a person uses it: a subprocess typed into through stdin, answers read back from stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _serve_helpers import QUESTION_1, QUESTION_2, expected_answers, one_thread, trained_checkpoint

from comm_tower.inference.loading import load_pretrained_model
from comm_tower.serve.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tiny_dir):
    return trained_checkpoint(tiny_dir)


def chat(args: list[str], typed: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `python -m comm_tower.serve.cli ARGS`, type `typed`, then close stdin (Ctrl-D)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "comm_tower.serve.cli", *args],
        input=typed,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def answers_in(stdout: str) -> list[str]:
    """The text after each 'ASSISTANT: ' up to the end of its line."""
    return [chunk.split("\n", 1)[0].strip() for chunk in stdout.split("ASSISTANT: ")[1:]]


def test_two_turns_streamed_then_ctrl_d(ckpt):
    image = ckpt / "red.png"
    with one_thread():
        tokenizer, model, _, _ = load_pretrained_model(str(ckpt / "full"))
    want = expected_answers(model, tokenizer, image, max_new_tokens=12)
    args = ["--model-path", str(ckpt / "full"), "--image-file", f"file://{image}", "--device", "cpu"]
    args += ["--temperature", "0", "--max-new-tokens", "12"]
    run = chat(args, f"{QUESTION_1}\n\n{QUESTION_2}\n")  # the empty line is ignored
    assert run.returncode == 0, run.stderr[-2000:]
    assert answers_in(run.stdout) == want
    assert run.stdout.count("USER: ") == 4  # two turns, one blank line, and the prompt Ctrl-D answered
    assert "Traceback" not in run.stderr


def _bad_images(folder: Path, good: Path) -> dict[str, Path]:
    """A path that does not exist, a PNG cut short after its header, and a text file."""
    truncated, notes = folder / "truncated.png", folder / "notes.txt"
    truncated.write_bytes(good.read_bytes()[:60])
    notes.write_text("these are notes, not pixels\n")
    return {
        "not found": folder / "missing.png",
        "damaged or unreadable": truncated,
        "not an image file": notes,
    }


def test_4bit_chat_bad_images_mid_chat_and_exit_word(ckpt, tmp_path):
    bad = _bad_images(tmp_path, ckpt / "red.png")
    args = ["--model-path", str(ckpt / "full"), "--image-file", str(ckpt / "red.png"), "--load-4bit"]
    args += ["--temperature", "0", "--max-new-tokens", "6"]
    typed = "".join(f"/image {p}\n" for p in bad.values()) + f"{QUESTION_1}\nexit\nnever read\n"
    run = chat(args, typed)
    assert run.returncode == 0, run.stderr[-2000:]
    answers = answers_in(run.stdout)
    assert len(answers) == 1 and answers[0]  # the chat went on with the good image
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 3, errors
    for line, (says, path) in zip(errors, bad.items()):
        assert line.startswith("comm-chat: error:") and path.name in line and says in line
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("says", ["not found", "damaged or unreadable", "not an image file", "web URL"])
def test_bad_image_at_start_gives_one_clear_line(ckpt, tmp_path, capfd, says):
    bad = _bad_images(tmp_path, ckpt / "red.png")
    source = "https://example.com/cat.jpg" if says == "web URL" else str(bad[says])
    with pytest.raises(SystemExit) as stop:
        main(["--model-path", str(ckpt / "full"), "--image-file", source])
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert stop.value.code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("comm-chat: error:") and Path(source).name in lines[0] and says in lines[0]
