"""Templates: token layout and label masking against hand-built examples, one per template.

The expected ids are built by tokenizing hand-cut pieces one by one (cut where the byte-level
pre-tokenizer splits anyway, so piecewise and whole tokenization agree); the template code tokenizes the
whole text once and maps answer spans through offsets. Texts follow LLaVA's conversation.py layouts.
"""

from __future__ import annotations

import pytest
from _data_helpers import enc, tokenizer

from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.data.templates import TEMPLATES, Message, get_template, normalize_image_tags

IMG = object()  # marks where an image id goes in a hand-built layout
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TWO_ROUNDS = [
    Message("user", "<image>\nWhat is this?"),
    Message("assistant", "A red box."),
    Message("user", "Sure?"),
    Message("assistant", "Yes."),
]


def build(tok, pieces: list, bos: bool) -> tuple[list[int], list[int]]:
    """Expected (ids, labels) from (text, learnt) pieces; IMG is one image id, never learnt."""
    ids, labels = ([tok.bos_token_id], [IGNORE_INDEX]) if bos else ([], [])
    for piece in pieces:
        if piece is IMG:
            ids.append(IMAGE_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
            continue
        text, learnt = piece
        part = enc(tok, text)
        ids += part
        labels += part if learnt else [IGNORE_INDEX] * len(part)
    return ids, labels


def test_registry_lists_the_three_templates_and_names_unknown_ones():
    assert {"plain", "vicuna_v1", "chat_template"} <= set(TEMPLATES.names())
    with pytest.raises(KeyError, match=r"unknown conversation template 'v2'.*vicuna_v1"):
        get_template("v2")


def test_vicuna_v1_two_rounds_learns_only_answers_and_their_eos():
    tok = tokenizer()
    tpl = get_template("vicuna_v1")
    text = tpl.render_training(TWO_ROUNDS, tok).text
    assert text == (
        SYSTEM + " USER: <image>\nWhat is this? ASSISTANT: A red box.</s>USER: Sure? ASSISTANT: Yes.</s>"
    )
    expected = build(
        tok,
        [
            (SYSTEM, False),
            (" USER: ", False),
            IMG,
            ("\nWhat is this?", False),
            (" ASSISTANT:", False),
            (" A red box.", True),
            ("</s>", True),
            ("USER:", False),
            (" Sure?", False),
            (" ASSISTANT:", False),
            (" Yes.", True),
            ("</s>", True),
        ],
        bos=True,
    )
    assert tpl.encode(TWO_ROUNDS, tok) == expected
    assert expected[0].count(IMAGE_TOKEN_INDEX) == 1


def test_vicuna_v1_text_only_and_system_turn_replaces_the_default_system_prompt():
    tok = tokenizer()
    msgs = [Message("system", "Be brief."), Message("user", "hi"), Message("assistant", "hello there")]
    tpl = get_template("vicuna_v1")
    assert tpl.render_training(msgs, tok).text == "Be brief. USER: hi ASSISTANT: hello there</s>"
    expected = build(
        tok,
        [
            ("Be brief.", False),
            (" USER:", False),
            (" hi", False),
            (" ASSISTANT:", False),
            (" hello there", True),
            ("</s>", True),
        ],
        bos=True,
    )
    assert tpl.encode(msgs, tok) == expected


def test_plain_keeps_only_image_then_caption_and_learns_the_caption():
    tok = tokenizer()
    msgs = [Message("user", "<image>\nDescribe it briefly."), Message("assistant", "A red box.")]
    tpl = get_template("plain")
    assert tpl.render_training(msgs, tok).text == "<image>A red box.\n"
    expected = build(tok, [IMG, ("A red box.", True), ("\n", True)], bos=True)
    assert tpl.encode(msgs, tok) == expected
    assert expected[1][:2] == [IGNORE_INDEX, IGNORE_INDEX]


def test_plain_rejects_a_dialogue():
    with pytest.raises(ValueError, match="template 'plain' takes one user turn"):
        get_template("plain").encode(TWO_ROUNDS, tokenizer())


def test_chat_template_learns_each_answer_through_its_end_token():
    tok = tokenizer()
    tpl = get_template("chat_template")
    text = tpl.render_training(TWO_ROUNDS, tok).text
    assert text == tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in TWO_ROUNDS], tokenize=False
    )
    expected = build(
        tok,
        [
            ("<s><|user|>\n", False),
            IMG,
            ("\nWhat is this?</s>\n<|assistant|>\n", False),
            ("A red box.</s>", True),
            ("\n<|user|>\nSure?</s>\n<|assistant|>\n", False),
            ("Yes.</s>", True),
            ("\n", False),
        ],
        bos=False,  # the chat template writes <s> itself
    )
    assert tpl.encode(TWO_ROUNDS, tok) == expected
    assert expected[0].count(tok.bos_token_id) == 1


CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chatml_style_template_with_a_default_system_prompt():
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    expected = build(
        tok,
        [
            ("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n", False),
            IMG,
            ("\nWhat is this?<|im_end|>\n<|im_start|>assistant\n", False),
            ("A red box.<|im_end|>", True),
            ("\n<|im_start|>user\nSure?<|im_end|>\n<|im_start|>assistant\n", False),
            ("Yes.<|im_end|>", True),
            ("\n", False),
        ],
        bos=False,
    )
    assert get_template("chat_template").encode(TWO_ROUNDS, tok) == expected


def test_chat_template_that_rewrites_earlier_turns_is_refused():
    tok = tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(ValueError, match="renders turn 1 differently"):
        get_template("chat_template").encode(TWO_ROUNDS[:2], tok)


def test_generation_prompts_end_where_the_assistant_answers():
    tok = tokenizer()
    question = [Message("user", "<image>\nWhat is this?")]
    vicuna = get_template("vicuna_v1").render_prompt(question, tok)
    assert vicuna == SYSTEM + " USER: <image>\nWhat is this? ASSISTANT:"
    assert get_template("plain").render_prompt(question, tok) == "<image>"
    chat = get_template("chat_template").render_prompt(question, tok)
    assert chat == "<s><|user|>\n<image>\nWhat is this?</s>\n<|assistant|>\n"
    ids = get_template("vicuna_v1").encode_prompt(question, tok)
    assert ids[0] == tok.bos_token_id and ids.count(IMAGE_TOKEN_INDEX) == 1
    with pytest.raises(ValueError, match="must end with a user turn"):
        get_template("vicuna_v1").encode_prompt(TWO_ROUNDS, tok)


def test_image_tags_move_to_the_front_and_missing_ones_are_added():
    msgs = [Message("user", "What is <image> this?"), Message("assistant", "A box.")]
    assert normalize_image_tags(msgs, 1)[0].content == "<image>\nWhat is  this?"
    untagged = [Message("user", "Compare them."), Message("assistant", "Same.")]
    assert normalize_image_tags(untagged, 2)[0].content == "<image>\n<image>\nCompare them."
    with pytest.raises(ValueError, match="2 '<image>' tags but 1 image"):
        normalize_image_tags([Message("user", "<image><image>"), Message("assistant", "x")], 1)


def test_turns_must_alternate():
    bad = [Message("user", "a"), Message("user", "b")]
    with pytest.raises(ValueError, match="turn 1: expected a assistant turn"):
        get_template("vicuna_v1").encode(bad, tokenizer())
