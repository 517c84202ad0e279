"""An exported checkpoint in an environment WITHOUT comm_tower: transformers alone loads, chats and pipelines it.

Run by scripts/test_remote_code.sh in venvs holding only torch, transformers and their needs (the oldest and
the newest transformers the remote code supports); `COMM_REMOTE_DIR` is what `tests/_hub_helpers.py` prepared:
the export (`hf/`), the image, and the greedy tokens comm-chat generates for it (`expected.json`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

ROOT = Path(os.environ["COMM_REMOTE_DIR"])
EXPECTED = json.loads((ROOT / "expected.json").read_text())
EXPORT = ROOT / "hf"


def messages() -> list[dict]:
    image = Image.open(EXPECTED["image"])
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": EXPECTED["question"]}],
        }
    ]


def greedy() -> dict:
    return {"max_new_tokens": EXPECTED["max_new_tokens"], "do_sample": False}


def test_comm_tower_is_not_installed() -> None:
    assert importlib.util.find_spec("comm_tower") is None


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.set_num_threads(1)
    return AutoModelForImageTextToText.from_pretrained(EXPORT, trust_remote_code=True).eval()


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(EXPORT, trust_remote_code=True)


def test_remote_classes_are_the_checkpoints_code(model, processor) -> None:
    assert type(model).__module__.startswith("transformers_modules.")
    assert type(processor).__module__.startswith("transformers_modules.")


def test_chat_template_and_generate_match_comm_chat(model, processor) -> None:
    inputs = processor.apply_chat_template(messages(), tokenize=True, return_dict=True)
    out = model.generate(**inputs, **greedy())
    assert out[0].tolist() == EXPECTED["tokens"]


def test_processor_call_matches_comm_chat(model, processor) -> None:
    text = processor.apply_chat_template(messages())
    inputs = processor(images=Image.open(EXPECTED["image"]), text=text, return_tensors="pt")
    assert model.generate(**inputs, **greedy())[0].tolist() == EXPECTED["tokens"]


def test_pipeline_matches_comm_chat() -> None:
    pipe = pipeline("image-text-to-text", model=str(EXPORT), trust_remote_code=True)
    out = pipe(text=messages(), return_tensors=True, generate_kwargs=greedy())
    assert torch.as_tensor(out[0]["generated_token_ids"]).tolist() == EXPECTED["tokens"]
