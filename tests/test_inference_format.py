"""The chat format a checkpoint records, flags that override it, the answer-length cap, and pad-to-square."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from comm_tower.constants import IMAGE_TOKEN_INDEX
from comm_tower.data.templates import VicunaV1Template
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.chat import ChatSession
from comm_tower.inference.generation import GenerationConfig, pixel_values
from comm_tower.inference.loading import load_pretrained_model
from comm_tower.inference.prompts import ChatFormat
from comm_tower.model import CommLlavaConfig

SYSTEM = "Answer briefly."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def ckpt(tiny_dir, tmp_path_factory):
    """A saved tiny COMM model that records vicuna_v1 with the system prompt SYSTEM, as comm-train saves one."""
    from _serve_helpers import random_checkpoint

    from comm_tower.zoo.tiny_lm import build_tiny_llama

    root = tmp_path_factory.mktemp("format")
    lm_dir = build_tiny_llama(root / "lm")
    torch.manual_seed(0)
    return random_checkpoint(lm_dir, root / "model", conv_template="vicuna_v1", system_prompt=SYSTEM)


@pytest.fixture(scope="module")
def bundle(ckpt):
    return load_pretrained_model(str(ckpt))


def _text(tokenizer, ids: list[int]) -> str:
    """The prompt as text, each image tag written as <image>."""
    pieces, run = [], []
    for i in [*ids, None]:
        if i is None or i == IMAGE_TOKEN_INDEX:
            pieces.append(tokenizer.decode(run, skip_special_tokens=True))
            run = []
            if i is not None:
                pieces.append("<image>")
        else:
            run.append(i)
    return "".join(pieces)


def test_recorded_format_survives_save_and_load_and_is_used_by_default(ckpt, bundle):
    saved = json.loads((ckpt / "config.json").read_text())
    assert (saved["conv_template"], saved["system_prompt"]) == ("vicuna_v1", SYSTEM)
    tokenizer, model, _, _ = bundle
    assert (model.config.conv_template, model.config.system_prompt) == ("vicuna_v1", SYSTEM)
    assistant = Assistant(*bundle)
    assert assistant.chat == ChatFormat("vicuna_v1", SYSTEM)
    text = _text(tokenizer, assistant.question_ids("What is it?", with_image=True))
    assert text.replace(" ", "") == f"{SYSTEM} USER: <image>\nWhat is it? ASSISTANT:".replace(" ", "")


def test_a_checkpoint_that_records_nothing_uses_vicuna_v1_and_its_own_system_prompt():
    assert ChatFormat.of(CommLlavaConfig()) == ChatFormat("vicuna_v1", None)
    assert ChatFormat.of(CommLlavaConfig(conv_template="plain")) == ChatFormat("plain", None)


def test_comm_chat_flags_override_the_recorded_format(ckpt):
    from comm_tower.serve.cli import build_parser, open_session

    def chat_format(*flags: str) -> ChatFormat:
        args = build_parser().parse_args(["--model-path", str(ckpt), "--device", "cpu", *flags])
        return open_session(args).assistant.chat

    assert chat_format() == ChatFormat("vicuna_v1", SYSTEM)
    assert chat_format("--conv-mode", "plain") == ChatFormat("plain", SYSTEM)
    assert chat_format("--system-prompt", "Be terse.") == ChatFormat("vicuna_v1", "Be terse.")
    assert chat_format("--system-prompt", "default") == ChatFormat("vicuna_v1", None)


def test_comm_chat_refuses_an_unknown_conv_mode_in_one_line(ckpt, capfd):
    from comm_tower.serve.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--model-path", str(ckpt), "--conv-mode", "vicuna_v9"])
    assert stop.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--conv-mode vicuna_v9" in err[0] and "vicuna_v1" in err[0]


def test_comm_eval_prompts_with_the_recorded_format_unless_its_flags_say_otherwise(
    bundle, tmp_path, monkeypatch
):
    from comm_tower.eval.runner import build_parser, run

    Image.new("RGB", (40, 30), (200, 20, 20)).save(tmp_path / "a.png")
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"question_id": 1, "image": "a.png", "text": "Is it red?", "label": "yes"})
    )
    seen: list[str] = []
    real = Assistant.answer

    def spy(self, batch_ids, *args):
        seen.extend(_text(self.tokenizer, ids) for ids in batch_ids)
        return real(self, batch_ids, *args)

    monkeypatch.setattr(Assistant, "answer", spy)
    for k, flags in enumerate(([], ["--system-prompt", "Be terse."], ["--system-prompt", "default"])):
        argv = ["--question-file", str(questions), "--image-folder", str(tmp_path), "--task", "pope_random"]
        argv += ["--answers-file", str(tmp_path / f"answers{k}.jsonl"), "--max-new-tokens", "2", *flags]
        run(build_parser().parse_args(argv), bundle=bundle)
    assert len(seen) == 3
    assert seen[0].startswith(f"{SYSTEM} USER: <image>")
    assert seen[1].startswith("Be terse. USER: <image>")
    assert seen[2].startswith(f"{VicunaV1Template.system} USER: <image>")


def test_too_many_new_tokens_are_capped_to_what_fits_with_one_notice(bundle, caplog):
    tokenizer, model, processor, _ = bundle
    probe = Assistant(*bundle)
    image = Image.new("RGB", (50, 40), (10, 200, 30))
    ids = probe.question_ids("What colour is it?", with_image=True)
    positions = len(ids) - 1 + model.get_vision_tower().num_patches  # independent of the code under test
    assistant = Assistant(tokenizer, model, processor, context_len=positions + 3)
    gen = GenerationConfig(max_new_tokens=50)
    pixels = [assistant.pixels(image)]
    with caplog.at_level(logging.WARNING, logger="comm_tower.inference"):
        kwargs = assistant.generate_kwargs([ids], pixels, [image.size], gen)
        answers = [assistant.answer([ids], pixels, [image.size], gen) for _ in range(2)]
    assert kwargs["max_new_tokens"] == 3
    notes = [r for r in caplog.records if "--max-new-tokens 50" in r.getMessage()]
    assert len(notes) == 1, [r.getMessage() for r in caplog.records]
    assert f"{positions} of the model's {positions + 3} positions" in notes[0].getMessage()
    with torch.no_grad():  # it does generate: exactly the 3 tokens that fit when forced to go on
        out = model.generate(**{**kwargs, "min_new_tokens": 3})
    assert out.shape[1] == 3 and all(isinstance(a[0], str) for a in answers)
    # unset: an answer may take all that fits; no notice
    assert assistant.generate_kwargs([ids], pixels, [image.size], GenerationConfig())["max_new_tokens"] == 3
    full = Assistant(tokenizer, model, processor, context_len=positions)
    with pytest.raises(ValueError, match=rf"takes {positions} of the model's {positions} positions"):
        full.generate_kwargs([ids], pixels, [image.size], GenerationConfig())


def test_a_chat_asked_for_more_than_fits_answers_instead_of_refusing(bundle, caplog):
    tokenizer, model, processor, _ = bundle
    assistant = Assistant(tokenizer, model, processor, context_len=model.get_vision_tower().num_patches + 40)
    session = ChatSession(assistant, GenerationConfig(max_new_tokens=512))
    session.set_image(Image.new("RGB", (30, 30), (0, 0, 255)))
    with caplog.at_level(logging.WARNING, logger="comm_tower.inference"):
        for question in ("What is it?", "And now?"):
            list(session.ask(question))  # no ValueError: capped
    assert sum("--max-new-tokens 512" in r.getMessage() for r in caplog.records) == 1
    assert [m.role for m in session.history] == ["user", "assistant"]  # only the last exchange fits
    assert session.history[0].content == "<image>\nAnd now?"  # the image moved to it


def test_pad_to_square_equals_a_paste_on_a_canvas_of_the_mean_colour(tmp_path):
    from comm_tower.data.dataset import DataArguments, LazySupervisedDataset
    from comm_tower.processor import CommImageProcessor, pad_to_square
    from comm_tower.zoo.tiny_lm import build_tiny_llama

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (20, 33, 3), dtype=np.uint8))  # 33 wide, 20 high
    canvas = Image.new("RGB", (33, 33), (122, 116, 104))  # 255 * CLIP's mean, rounded down as LLaVA does
    canvas.paste(img, (0, 6))
    assert np.array_equal(np.asarray(pad_to_square(img, CLIP_MEAN)), np.asarray(canvas))

    # inference and training both feed the processor that same padded image
    proc = CommImageProcessor(32, CLIP_MEAN, CLIP_STD)
    want = proc.preprocess(canvas)["pixel_values"][0]
    assert torch.equal(pixel_values(img, proc, "pad"), want)
    img.save(tmp_path / "x.png")
    (tmp_path / "d.json").write_text(
        json.dumps(
            [
                {
                    "image": "x.png",
                    "conversations": [
                        {"from": "human", "value": "<image>\nq"},
                        {"from": "gpt", "value": "a"},
                    ],
                }
            ]
        )
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_llama(tmp_path / "lm"))
    args = DataArguments(
        data_path=str(tmp_path / "d.json"), image_folder=str(tmp_path), image_aspect_ratio="pad"
    )
    item = LazySupervisedDataset(args.data_path, tok, proc, args)[0]
    assert torch.equal(item["images"][0], want)


def test_training_data_gets_and_records_the_system_prompt(tmp_path, caplog):
    from transformers import AutoTokenizer

    from comm_tower.data.dataset import DataArguments, LazySupervisedDataset
    from comm_tower.train.cli import record_chat_format
    from comm_tower.zoo.tiny_lm import build_tiny_llama

    tok = AutoTokenizer.from_pretrained(build_tiny_llama(tmp_path / "lm"))
    plain = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    own = {"conversations": [{"from": "system", "value": "Own."}, *plain["conversations"]]}

    def dataset(records: list[dict], system: str | None) -> LazySupervisedDataset:
        path = tmp_path / "d.json"
        path.write_text(json.dumps(records))
        args = DataArguments(data_path=str(path), is_multimodal=False, system_prompt=system)
        return LazySupervisedDataset(path, tok, None, args)

    flagged = dataset([plain, plain], SYSTEM)
    text = tok.decode(flagged[0]["input_ids"], skip_special_tokens=True)
    assert text.startswith(f"{SYSTEM} USER: hi ASSISTANT:")
    config = CommLlavaConfig()
    record_chat_format(config, "vicuna_v1", flagged)
    assert (config.conv_template, config.system_prompt) == ("vicuna_v1", SYSTEM)
    assert dataset([plain], None).common_system_prompt() is None  # the template's own
    assert dataset([own, own], None).common_system_prompt() == "Own."  # what the data itself says
    with caplog.at_level(logging.WARNING, logger="comm_tower.data"):
        assert (
            dataset([own, plain, plain], SYSTEM).common_system_prompt() == SYSTEM
        )  # the one most samples use
    assert any("2 different system prompts" in r.getMessage() for r in caplog.records)
