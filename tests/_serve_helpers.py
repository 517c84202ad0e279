"""Tiny trained COMM checkpoints for the serve tests: one full model taught two answers, built once per run."""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer

from comm_tower.data.templates import Message, get_template
from comm_tower.inference.generation import pixel_values

QUESTION_1, ANSWER_1 = "What is in the image?", "A red square."
QUESTION_2, ANSWER_2 = "What colour is it?", "It is red."
RED = (220, 30, 30)


def red_image(path: Path) -> Path:
    """A red square picture (not square in pixels, so padding to square is exercised)."""
    Image.new("RGB", (72, 56), RED).save(path)
    return path


def conversation(with_answers: bool) -> list[Message]:
    """The two-turn chat the tiny model is taught (image in front of the first question)."""
    turns = [Message("user", f"<image>\n{QUESTION_1}"), Message("assistant", ANSWER_1)]
    turns += [Message("user", QUESTION_2), Message("assistant", ANSWER_2)]
    return turns if with_answers else turns[:1]


def random_checkpoint(lm_dir: Path, out: Path, tower: str = "tiny-clip", **config_fields: object) -> Path:
    """Save an untrained comm_llava model (the LLM at `lm_dir` + `tower` + a linear projector) with its tokenizer."""
    from comm_tower.model import assemble_model

    model = assemble_model(AutoModelForCausalLM.from_pretrained(lm_dir), tower, "linear")
    for name, value in config_fields.items():
        setattr(model.config, name, value)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(lm_dir).save_pretrained(out)
    return out


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: on 2 shared cores, 2 threads per tiny op is 10x slower than 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=1)
def trained_checkpoint(tiny_dir: Path, steps: int = 100) -> Path:
    """Train LLM + projector of a tiny-comm model on the chat above (Adam, fp32, CPU) and save it whole."""
    from comm_tower.model import assemble_model
    from comm_tower.zoo.tiny_lm import build_tiny_llama

    root = Path(tempfile.mkdtemp(prefix="comm_serve_"))
    # shared by several test modules (so not pytest's tmp_path): removed when the test process exits
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    lm_dir = build_tiny_llama(root / "lm")
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    torch.manual_seed(0)
    model = assemble_model(AutoModelForCausalLM.from_pretrained(lm_dir), "tiny-comm", "linear")
    model.config.image_aspect_ratio = "pad"
    model.config.tokenizer_model_max_length = tokenizer.model_max_length
    ids, labels = get_template("vicuna_v1").encode(conversation(with_answers=True), tokenizer)
    image = pixel_values(Image.open(red_image(root / "red.png")), model.get_vision_tower().image_processor)
    batch = {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "images": image.unsqueeze(0),
    }
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-3)
    model.train()
    with one_thread():
        for _ in range(steps):
            loss = model(**batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.config.use_cache = False  # as comm-train saves it: the loader must turn the cache back on
    model.save_pretrained(root / "full")
    tokenizer.save_pretrained(root / "full")
    (root / "final_loss.txt").write_text(f"{loss.item():.6f}")
    return root


def expected_answers(model, tokenizer, image_path: Path, max_new_tokens: int = 12) -> list[str]:
    """Greedy answers to the two questions, by plain `model.generate` calls (no streaming, no ChatSession)."""
    pixels = pixel_values(Image.open(image_path).convert("RGB"), model.get_vision_tower().image_processor)
    template = get_template("vicuna_v1")
    answers: list[str] = []
    turns = [Message("user", f"<image>\n{QUESTION_1}")]
    for question in (None, QUESTION_2):
        if question is not None:
            turns += [Message("assistant", answers[-1]), Message("user", question)]
        ids = torch.tensor([template.encode_prompt(turns, tokenizer)])
        with one_thread(), torch.no_grad():
            out = model.generate(
                ids,
                images=pixels.unsqueeze(0),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        answers.append(tokenizer.decode(out[0], skip_special_tokens=True).strip())
    return answers
