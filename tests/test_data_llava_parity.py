"""Our templates against LLaVA 1.2.2's own `preprocess`: same input_ids, same labels, token for token.

Runs only in `.venv-llava` (transformers 4.37 + llava-torch; `python -m pytest -m llava` from the repo
root). The tokenizer is a sentencepiece model trained here with Llama's settings (dummy prefix, no
whitespace folding, byte fallback): LLaVA reads it with the slow `LlamaTokenizer` as it does Vicuna, we
read the same file with the fast tokenizer our templates need.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("llava", reason="LLaVA is not installed: run in .venv-llava")

import llava.conversation as llava_conv
import sentencepiece as spm
from llava.train import train as llava_train
from transformers import AutoTokenizer, LlamaTokenizer

from comm_tower.data.records import parse_record
from comm_tower.data.templates import get_template, normalize_image_tags

pytestmark = pytest.mark.llava

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the image? ASSISTANT: A red square on a white background.",
    "How many shapes are there? There are 3 shapes. Is it round? Yes. No. Describe it briefly.",
    "A blue circle and a green square. The yellow one is on the left.",
] * 4


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> tuple:
    """(slow, fast) Llama tokenizers over one Llama-like sentencepiece model."""
    out: Path = tmp_path_factory.mktemp("sp_llama")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=True,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        minloglevel=2,
        num_threads=1,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    LlamaTokenizer(vocab_file=str(out / "tokenizer.model"), legacy=True).save_pretrained(out)
    slow = AutoTokenizer.from_pretrained(out, use_fast=False)
    slow.pad_token = slow.unk_token  # what LLaVA's train.py does for v1
    return slow, AutoTokenizer.from_pretrained(out, use_fast=True)


def _llava(
    conversations: list[dict], version: str, has_image: bool, tokenizer
) -> tuple[list[int], list[int]]:
    llava_conv.default_conversation = llava_conv.conv_templates[version]
    args = SimpleNamespace(is_multimodal=True, mm_use_im_start_end=False)
    sources = llava_train.preprocess_multimodal([copy.deepcopy(conversations)], args)
    out = llava_train.preprocess(sources, tokenizer, has_image=has_image)
    return out["input_ids"][0].tolist(), out["labels"][0].tolist()


def _ours(conversations: list[dict], version: str, tokenizer) -> tuple[list[int], list[int]]:
    record = {"conversations": conversations}
    n_images = sum(t["value"].count("<image>") for t in conversations)
    if n_images:
        record["image"] = ["x.png"] * n_images
    sample = parse_record(record, 0)
    messages = normalize_image_tags(list(sample.messages), len(sample.images))
    return get_template(version).encode(messages, tokenizer)


def _turns(*values: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


CASES = [
    ("vicuna_v1", _turns("What is in the image?\n<image>", "A red square on a white background.")),
    (
        "vicuna_v1",
        _turns(
            "<image>\nHow many shapes are there?",
            "There are 3 shapes.\nThe yellow one is on the left.",
            "Is it round?",
            "No.",
            "Describe it briefly.",
            "A blue circle and a green square.",
        ),
    ),
    ("vicuna_v1", _turns("Is it round?", "Yes.", "How many shapes are there?", "There are 3 shapes.")),
    ("plain", _turns("<image>\nDescribe it briefly.", "A blue circle on a white background.")),
    ("plain", _turns("Describe it.\n<image>", "A red square.")),
]


@pytest.mark.parametrize("version,conversations", CASES)
def test_same_ids_and_labels_as_llava_preprocess(tokenizers, version, conversations):
    slow, fast = tokenizers
    has_image = any("<image>" in t["value"] for t in conversations)
    want_ids, want_labels = _llava(conversations, version, has_image, slow)
    ids, labels = _ours(conversations, version, fast)
    assert ids == want_ids
    assert labels == want_labels
    assert any(lab != -100 for lab in labels)  # LLaVA did not mask everything (no "tokenization mismatch")
