"""Streaming and the chat session: pieces arrive one by one and add up to the non-streamed answer."""

from __future__ import annotations

import pytest
import torch
from _serve_helpers import QUESTION_1, QUESTION_2, expected_answers, one_thread, trained_checkpoint
from PIL import Image
from transformers import AutoTokenizer

from comm_tower.inference.assistant import Assistant
from comm_tower.inference.chat import ChatSession
from comm_tower.inference.generation import GenerationConfig
from comm_tower.inference.loading import load_pretrained_model
from comm_tower.inference.streaming import TextChunkStreamer, stream_generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpt(tiny_dir):
    return trained_checkpoint(tiny_dir)


@pytest.fixture(scope="module")
def bundle(ckpt):
    with one_thread():
        return load_pretrained_model(str(ckpt / "full"))


def test_session_streams_several_pieces_that_add_up_to_generate(bundle, ckpt):
    tokenizer, model, processor, context_len = bundle
    want = expected_answers(model, tokenizer, ckpt / "red.png", max_new_tokens=12)
    session = ChatSession(Assistant(tokenizer, model, processor, context_len), GenerationConfig(12))
    session.set_image(Image.open(ckpt / "red.png"))
    got = []
    with one_thread():
        for question in (QUESTION_1, QUESTION_2):
            pieces = list(session.ask(question))
            assert len(pieces) >= 3, pieces  # one piece per token, not the whole answer at the end
            got.append("".join(pieces).strip())
    assert got == want
    assert [m.role for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert session.history[0].content.startswith("<image>\n") and "<image>" not in session.history[2].content


def test_streamer_never_splits_a_character(ckpt):
    tokenizer = AutoTokenizer.from_pretrained(ckpt / "full")
    text = "né 日本 ok"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    streamer = TextChunkStreamer(tokenizer)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    for tok in ids:  # byte-level BPE: the CJK characters span several tokens
        streamer.put(torch.tensor([tok]))
    streamer.end()
    pieces = list(streamer)
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(pieces) > 1


def test_errors_in_generate_reach_the_reader(bundle):
    tokenizer, model, _, _ = bundle
    bad = torch.tensor([[1, -200, 5]])  # an <image> id but no image
    with pytest.raises(Exception, match=r"embedding|index|out of range"):
        list(stream_generate(model, tokenizer, inputs=bad, max_new_tokens=2, images=None))


def test_long_chats_drop_old_turns_but_keep_the_image_turn(bundle, ckpt):
    tokenizer, model, processor, _ = bundle
    session = ChatSession(Assistant(tokenizer, model, processor, context_len=200), GenerationConfig(4))
    session.set_image(Image.open(ckpt / "red.png"))
    with one_thread():
        for i in range(6):
            list(session.ask(f"question number {i} about the picture"))
    assert session.history[0].content.startswith("<image>\n")
    ids = session.prompt_ids("one more")
    assert len(ids) + model.get_vision_tower().num_patches - 1 <= 200 - 4
    assert len(session.history) < 12


def test_web_demo_logic_streams_and_starts_over_on_a_new_image(bundle, ckpt, tmp_path):
    from comm_tower.serve.gradio_app import WebChat

    tokenizer, model, processor, context_len = bundle
    want = expected_answers(model, tokenizer, ckpt / "red.png", max_new_tokens=12)
    web = WebChat(ChatSession(Assistant(tokenizer, model, processor, context_len), GenerationConfig(12)))
    with one_thread():
        first = list(web.respond(QUESTION_1, str(ckpt / "red.png"), []))
        second = list(web.respond(QUESTION_2, str(ckpt / "red.png"), first[-1]))
    assert len(first) >= 3  # one update per streamed piece
    assert [m["content"] for m in second[-1]] == [QUESTION_1, want[0], QUESTION_2, want[1]]
    other = tmp_path / "other.png"
    Image.new("RGB", (40, 40), (0, 0, 255)).save(other)
    with one_thread():
        fresh = list(web.respond(QUESTION_1, str(other), second[-1]))
    assert [m["role"] for m in fresh[-1]] == ["user", "assistant"]  # a new image: a new conversation
    error = list(web.respond("hi", str(tmp_path / "gone.png"), []))[-1]
    assert "not found" in error[-1]["content"] and "gone.png" in error[-1]["content"]


def test_web_demo_builds_with_gradio(bundle):
    pytest.importorskip("gradio", reason="optional extra: pip install 'comm-tower[web]'")
    from comm_tower.serve.gradio_app import WebChat, build_demo

    tokenizer, model, processor, context_len = bundle
    demo = build_demo(WebChat(ChatSession(Assistant(tokenizer, model, processor, context_len))))
    assert demo is not None


def test_stop_strings_and_seeds_act_alike_streamed_and_batched(bundle, ckpt):
    tokenizer, model, processor, context_len = bundle
    assistant = Assistant(tokenizer, model, processor, context_len)
    image = Image.open(ckpt / "red.png").convert("RGB")
    ids, pixels = assistant.question_ids(QUESTION_1, True), assistant.pixels(image)
    full = expected_answers(model, tokenizer, ckpt / "red.png", max_new_tokens=12)[0]
    word = full.split()[-1]
    gen = GenerationConfig(12, stop=(word,))
    with one_thread():
        batched = assistant.ask(image, QUESTION_1, gen)
        stopped = assistant.stream(ids, pixels, image.size, gen)
        pieces = list(stopped)
        whole = assistant.stream(ids, pixels, image.size, GenerationConfig(12))
        assert "".join(whole) == full
        short = assistant.stream(ids, pixels, image.size, GenerationConfig(2))
        list(short)
        sampled = GenerationConfig(8, temperature=1.5, seed=3)
        twice = [assistant.ask(image, QUESTION_1, sampled) for _ in range(2)]
        streamed = "".join(assistant.stream(ids, pixels, image.size, sampled))
    assert batched == "".join(pieces) == full[: full.index(word)].strip()
    assert not any(word in p for p in pieces)
    assert stopped.finish_reason == "stop" and whole.finish_reason == "stop"
    assert stopped.new_tokens < whole.new_tokens  # generation ended at the stop string, not after it
    assert short.finish_reason == "length" and short.new_tokens == 2
    assert twice[0] == twice[1] == streamed  # one seed, one sample, streamed or not


def test_streamer_holds_back_what_may_become_a_stop_string(ckpt):
    tokenizer = AutoTokenizer.from_pretrained(ckpt / "full")
    streamer = TextChunkStreamer(tokenizer, stop=("red square",))
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    sent = []
    for tok in tokenizer(" A red squid and a red square here", add_special_tokens=False)["input_ids"]:
        streamer.put(torch.tensor([tok]))
        while not streamer.pieces.empty():
            sent.append(streamer.pieces.get())
    streamer.end()
    assert streamer.stopped
    assert "".join(sent) + "".join(streamer) == "A red squid and a"
