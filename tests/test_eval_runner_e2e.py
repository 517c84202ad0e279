"""comm-eval end to end with a tiny random COMM model: answers, batching, resuming, scoring."""

import json

import pytest
from PIL import Image

from comm_tower.eval.answering import answer_questions
from comm_tower.eval.metrics import METRICS
from comm_tower.eval.runner import build_parser, main, run
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.generation import GenerationConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_dir, tmp_path_factory):
    """Folder of a saved tiny random COMM model (tiny Llama + tiny-clip tower + linear projector)."""
    from _serve_helpers import random_checkpoint

    from comm_tower.zoo.tiny_lm import build_tiny_llama

    root = tmp_path_factory.mktemp("tiny_comm")
    return random_checkpoint(build_tiny_llama(root / "lm"), root / "model")


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    """(tokenizer, model, image_processor, context_len) through the project's loader."""
    from comm_tower.inference.loading import load_pretrained_model

    return load_pretrained_model(str(tiny_checkpoint))


@pytest.fixture
def question_file(tmp_path):
    """Six POPE-style questions over images of different sizes (one without an image)."""
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(64, 64), (96, 48), (40, 80)]):
        Image.new("RGB", size, (60 * i, 120, 200 - 50 * i)).save(images / f"{i}.png")
    rows = [
        {"question_id": f"q{k}", "image": f"{k % 3}.png", "text": f"Is there a red {w}?", "label": lab}
        for k, (w, lab) in enumerate(
            [("cat", "yes"), ("dog", "no"), ("car", "no"), ("cup", "yes"), ("hat", "no")]
        )
    ]
    rows.append({"question_id": "q5", "text": "Is the sky blue?", "label": "yes"})
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, images


def _answers(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_end_to_end_then_resume_without_reanswering(
    tiny_checkpoint, tiny_model, question_file, tmp_path, capsys
):
    questions, images = question_file
    out = tmp_path / "answers.jsonl"
    argv = [
        "--question-file",
        str(questions),
        "--image-folder",
        str(images),
        "--answers-file",
        str(out),
        "--task",
        "pope_random",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "3",
    ]
    # first run through the command line: comm-eval loads the checkpoint with the project's loader
    main(
        [
            *argv,
            "--model-path",
            str(tiny_checkpoint),
            "--device",
            "cpu",
            "--scores-file",
            str(tmp_path / "s.json"),
        ]
    )
    scores = json.loads((tmp_path / "s.json").read_text())
    first = _answers(out)
    assert sorted(a["question_id"] for a in first) == [f"q{k}" for k in range(6)]
    assert all(a["prompt"].startswith("<image>\n") for a in first if a["question_id"] != "q5")
    labels = {
        json.loads(line)["question_id"]: json.loads(line)["label"]
        for line in questions.read_text().splitlines()
    }
    expected = METRICS.get("pope")(
        [{"prediction": a["text"], "label": labels[a["question_id"]]} for a in first]
    )
    assert scores == pytest.approx(expected)
    assert "pope_random" in capsys.readouterr().out

    # second run: nothing is answered again (answer_ids are fresh uuids, so any re-answer would show)
    run(build_parser().parse_args(argv), bundle=tiny_model)
    assert _answers(out) == first

    # a run killed after 3 answers (mid-write): only the missing ones are answered
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:10])
    run(build_parser().parse_args(argv), bundle=tiny_model)
    resumed = _answers(out)
    assert resumed[:3] == first[:3]
    assert sorted(a["question_id"] for a in resumed) == sorted(a["question_id"] for a in first)


def test_batched_answers_equal_one_by_one(tiny_model, question_file, tmp_path):
    questions, images = question_file
    rows = [json.loads(line) for line in questions.read_text().splitlines()][:5]
    tok, model, proc, _ = tiny_model
    gen = GenerationConfig(max_new_tokens=4)
    texts = {}
    for bs in (1, 3):
        path = tmp_path / f"bs{bs}.jsonl"
        assert answer_questions(Assistant(tok, model, proc), rows, path, images, gen=gen, batch_size=bs) == 5
        texts[bs] = {a["question_id"]: a["text"] for a in _answers(path)}
    assert len(set(texts[1].values())) > 1  # the prompts and images do change the answers
    assert texts[1] == texts[3]


def test_system_prompt_replaces_the_templates(tiny_model, question_file, tmp_path, monkeypatch):
    """`system_prompt=` reaches the prompt the model sees, in place of vicuna_v1's default (as in training data)."""
    from comm_tower.data.templates import VicunaV1Template

    questions, images = question_file
    rows = [json.loads(line) for line in questions.read_text().splitlines()][:2]
    tok, model, proc, _ = tiny_model
    seen: list[str] = []
    real = Assistant.answer

    def spy(self, batch_ids, *args):
        seen.extend(tok.decode([i for i in ids if i >= 0], skip_special_tokens=True) for ids in batch_ids)
        return real(self, batch_ids, *args)

    monkeypatch.setattr(Assistant, "answer", spy)
    gen = GenerationConfig(max_new_tokens=2)
    brief = Assistant(tok, model, proc, system_prompt="Be brief.")
    answer_questions(brief, rows, tmp_path / "a.jsonl", images, gen=gen)
    answer_questions(Assistant(tok, model, proc), rows, tmp_path / "b.jsonl", images, gen=gen)
    assert len(seen) == 4
    with_system, default = seen[:2], seen[2:]
    assert all(p.replace(" ", "").startswith("Bebrief.USER:") for p in with_system), with_system
    assert all(VicunaV1Template.system.split()[0] in p and "brief" not in p for p in default), default
