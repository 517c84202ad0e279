"""comm-serve as programs use it: the real `openai` client against the server on loopback, fp32 and 4-bit.

Answers are checked against comm-chat's (a `ChatSession` over the same checkpoint, greedy), which
test_serve_cli checks against plain `model.generate` calls; every bad request gets its 4xx and names its field.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import openai
import pytest
from _openai_helpers import ROOT, comm_serve, get, post
from _serve_helpers import QUESTION_1, QUESTION_2, expected_answers, one_thread, trained_checkpoint
from PIL import Image
from transformers import AutoTokenizer

from comm_tower.data.templates import Message, get_template
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.chat import ChatSession
from comm_tower.inference.generation import GenerationConfig

pytestmark = pytest.mark.slow
KEY = "sk-comm-test"
MODEL = "full"  # the served id: the --model-path folder's name
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def ckpt(tiny_dir):
    return trained_checkpoint(tiny_dir)


def data_uri(path_or_bytes) -> str:
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def user_turn(url: str, question: str = QUESTION_1) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
    return {"role": "user", "content": parts}


def chat_answers(ckpt, **load) -> list[str]:
    """comm-chat's greedy answers to the two questions about the red image (its ChatSession, its path)."""
    with one_thread():
        assistant = Assistant.load(str(ckpt / "full"), device="cpu", **load)
        session = ChatSession(assistant, GenerationConfig(NEW_TOKENS))
        session.set_image(Image.open(ckpt / "red.png").convert("RGB"))
        answers = ["".join(session.ask(q)) for q in (QUESTION_1, QUESTION_2)]
        if not load:  # and comm-chat's answers are plain generate's
            assert answers == expected_answers(
                assistant.model, assistant.tokenizer, ckpt / "red.png", NEW_TOKENS
            )
    return answers


def prompt_positions(ckpt) -> int:
    """Positions the first question takes: the template's tokens, the image tag counted as the tower's tokens."""
    tokenizer = AutoTokenizer.from_pretrained(ckpt / "full")
    ids = get_template("vicuna_v1").encode_prompt([Message("user", f"<image>\n{QUESTION_1}")], tokenizer)
    encoder = json.loads((ckpt / "full" / "config.json").read_text())["mm_comm"]["encoders"][0]
    return len(ids) - 1 + (encoder["image_size"] // encoder["patch_size"]) ** 2


@pytest.fixture(scope="module")
def want(ckpt) -> list[str]:
    return chat_answers(ckpt)


@pytest.fixture(scope="module")
def want_4bit(ckpt) -> list[str]:
    return chat_answers(ckpt, load_4bit=True)


@pytest.fixture(scope="module")
def fp32(ckpt, tmp_path_factory):
    args = ["--model-path", str(ckpt / "full"), "--device", "cpu", "--api-key", KEY, "--allow-local-files"]
    args += ["--max-concurrency", "32"]
    with comm_serve(args, tmp_path_factory.mktemp("fp32") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def q4(ckpt, tmp_path_factory):
    args = ["--model-path", str(ckpt / "full"), "--device", "cpu", "--load-4bit", "--max-concurrency", "1"]
    with comm_serve(args, tmp_path_factory.mktemp("q4") / "server.log") as url:
        yield url


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def conversation(ckpt, answers: list[str]) -> list[list[dict]]:
    """The first question with the image, then the second after the first answer."""
    first = [user_turn(data_uri(ckpt / "red.png"))]
    return [
        first,
        [*first, {"role": "assistant", "content": answers[0]}, {"role": "user", "content": QUESTION_2}],
    ]


def ask_both_ways(c: openai.OpenAI, messages: list[dict]) -> tuple[str, str]:
    """(non-streamed answer, streamed answer joined), each checked for OpenAI's shape."""
    whole = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=NEW_TOKENS, temperature=0)
    assert len(whole.choices) == 1 and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens >= 1
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    stream = c.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=NEW_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finishes, usage = [], [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finishes += [choice.finish_reason] if choice.finish_reason else []
    assert finishes == [whole.choices[0].finish_reason]
    assert len([p for p in pieces if p]) >= 3  # streamed token by token, not in one piece
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    return whole.choices[0].message.content, "".join(pieces)


def test_fp32_answers_equal_comm_chat(fp32, ckpt, want):
    c = client(fp32)
    assert [m.id for m in c.models.list().data] == [MODEL]
    for messages, expected in zip(conversation(ckpt, want), want):
        assert ask_both_ways(c, messages) == (expected, expected)
    first = c.chat.completions.create(
        model=MODEL, messages=conversation(ckpt, want)[0], max_tokens=NEW_TOKENS
    )
    assert first.usage.prompt_tokens == prompt_positions(ckpt)
    local = [user_turn(f"file://{ckpt / 'red.png'}")]  # allowed on this server (--allow-local-files)
    assert ask_both_ways(c, local) == (want[0], want[0])


def test_4bit_answers_equal_comm_chat(q4, ckpt, want_4bit):
    c = client(q4, key="unused")  # this server has no key
    for messages, expected in zip(conversation(ckpt, want_4bit), want_4bit):
        assert ask_both_ways(c, messages) == (expected, expected)


def test_stop_seed_max_tokens_and_usage(fp32, ckpt, want):
    c = client(fp32)
    messages = [user_turn(data_uri(ckpt / "red.png"))]
    word = want[0].split()[-1]
    stopped = c.chat.completions.create(model=MODEL, messages=messages, stop=[word], max_tokens=NEW_TOKENS)
    assert stopped.choices[0].message.content == want[0][: want[0].index(word)].strip()
    assert stopped.choices[0].finish_reason == "stop"
    short = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    sampled = [
        c.chat.completions.create(model=MODEL, messages=messages, temperature=1.5, seed=seed, max_tokens=8)
        for seed in (3, 3, 4)
    ]
    texts = [s.choices[0].message.content for s in sampled]
    assert texts[0] == texts[1]  # the same seed samples the same answer
    assert all(s.usage.completion_tokens <= 8 for s in sampled)


def bomb_png() -> bytes:
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")  # 400 million pixels in 48 KB
    return out.getvalue()


def bad_requests(ckpt) -> dict[str, tuple[object, int, str]]:
    """name -> (body, status, the field the error names)."""
    good = data_uri(ckpt / "red.png")
    base = {"model": MODEL, "max_tokens": NEW_TOKENS}
    two_images = {"role": "user", "content": [user_turn(good)["content"][0], *user_turn(good)["content"]]}
    image_field = "messages[0].content[0].image_url"
    return {
        "bad JSON": (b'{"model": "full", "messages": [', 400, "body"),
        "unknown model": ({**base, "model": "gpt-4o", "messages": [user_turn(good)]}, 404, "model"),
        "two user turns in a row": (
            {**base, "messages": [user_turn(good), {"role": "user", "content": "and?"}]},
            400,
            "messages[1].role",
        ),
        "assistant first": (
            {**base, "messages": [{"role": "assistant", "content": "hi"}, user_turn(good)]},
            400,
            "messages[0].role",
        ),
        "more images than the model takes": (
            {**base, "messages": [two_images]},
            400,
            "messages[0].content[1]",
        ),
        "image that does not decode": (
            {**base, "messages": [user_turn(data_uri(b"\x89PNG\r\n\x1a\n but not pixels"))]},
            400,
            image_field,
        ),
        "remote image URL": (
            {**base, "messages": [user_turn("https://example.com/cat.png")]},
            400,
            image_field,
        ),
        "decompression bomb": ({**base, "messages": [user_turn(data_uri(bomb_png()))]}, 400, image_field),
        "prompt longer than the context": (
            {**base, "messages": [user_turn(good, "is it a red square? " * 300)]},
            400,
            "messages",
        ),
        "max_tokens 0": ({**base, "max_tokens": 0, "messages": [user_turn(good)]}, 400, "max_tokens"),
        "max_tokens negative": ({**base, "max_tokens": -3, "messages": [user_turn(good)]}, 400, "max_tokens"),
    }


def test_bad_requests_get_4xx_naming_the_field(fp32, ckpt):
    for name, (body, status, param) in bad_requests(ckpt).items():
        got, reply = post(fp32, body, KEY)
        assert got == status, (name, reply)
        assert reply["error"]["param"] == param, (name, reply)
        assert reply["error"]["message"], name
    _, reply = post(fp32, bad_requests(ckpt)["decompression bomb"][0], KEY)
    assert "too large" in reply["error"]["message"]
    _, reply = post(fp32, bad_requests(ckpt)["prompt longer than the context"][0], KEY)
    assert reply["error"]["code"] == "context_length_exceeded"
    state = get(fp32, "/health")[1]
    assert state["status"] == "ok" and state["failed"] == 0 and state["active"] == 0


def test_wrong_or_missing_api_key_is_401(fp32, ckpt):
    body = {"model": MODEL, "messages": [user_turn(data_uri(ckpt / "red.png"))]}
    for key in ("sk-wrong", None):
        status, reply = post(fp32, body, key)
        assert status == 401 and reply["error"]["param"] == "authorization"
        assert reply["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as err:
        client(fp32, key="sk-wrong").models.list()
    assert err.value.status_code == 401
    with pytest.raises(openai.NotFoundError) as err:
        client(fp32).chat.completions.create(model="gpt-4o", messages=body["messages"])
    assert err.value.status_code == 404 and err.value.param == "model"
    assert get(fp32, "/health")[0] == 200  # health needs no key


def test_local_files_need_the_flag(q4, ckpt):
    status, reply = post(q4, {"model": MODEL, "messages": [user_turn(f"file://{ckpt / 'red.png'}")]})
    assert status == 400 and reply["error"]["param"] == "messages[0].content[0].image_url"
    assert "--allow-local-files" in reply["error"]["message"]


def test_load_16_clients_mixed_requests(fp32, ckpt, want):
    cmd = [sys.executable, str(ROOT / "scripts" / "serve_load_test.py"), "--base-url", fp32, "--api-key", KEY]
    cmd += ["--image", str(ckpt / "red.png"), "--question", QUESTION_1, "--expect", want[0]]
    cmd += f"--clients 16 --requests 8 --max-tokens {NEW_TOKENS} --deadline 240 --json".split()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    print(run.stdout)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    assert summary["requests"] == 128 and summary["good"] == 64 and summary["disconnected"] == 16
    assert summary["failures"] == 0 and summary["server_errors"] == 0 and summary["healthy_after"]
    assert summary["requests_per_s"] > 0 and summary["tokens_per_s"] > 0
