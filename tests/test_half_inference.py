"""load_pretrained_model in bf16 and fp16 on CPU, and 4-bit with bf16 / fp16 compute: the same greedy answers as
fp32, logits within a stated bound, and LLM, tower and projector in the dtype docs/inference.md promises."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from _serve_helpers import conversation, expected_answers, one_thread, trained_checkpoint
from PIL import Image

from comm_tower.data.templates import get_template
from comm_tower.inference.generation import pixel_values
from comm_tower.inference.loading import load_pretrained_model, part_dtypes

# Bounds on max |logits_half - logits_ref| as multiples of (the format's unit roundoff x max |logits_ref|).
# A logit is a sum of products through every layer, each rounded in the format, so its error grows with its
# size: measured on the trained tiny checkpoint (logits up to 11.3): bf16 1.2 u, fp16 2.0 u (u = 2**-8 for
# bf16, 2**-11 for fp16). Bound: 4 u, 2x-3x that. With 4-bit layers the reference is the same 4-bit model
# computing in fp32 (same quantised weights): bitsandbytes' CPU 4-bit kernel measured 3.3 u in bf16 and
# 1.8 bf16-u (14 fp16-u) in fp16, so it is bounded by 8 bf16-u for both compute dtypes.
UNIT = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
FULL_BOUND = 4
FOUR_BIT_BOUND_BF16_U = 8
HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(scope="module")
def checkpoint(tiny_dir) -> Path:
    return trained_checkpoint(tiny_dir)


@functools.lru_cache(maxsize=8)
def _run(folder: Path, load_4bit: bool, dtype: str | None) -> tuple[torch.Tensor, list[str], dict[str, str]]:
    """Logits of the first question's prompt, the greedy answers to both questions, and where each part is."""
    tokenizer, model, processor, _ = load_pretrained_model(
        str(folder / "full"), load_4bit=load_4bit, dtype=dtype
    )
    ids = torch.tensor([get_template("vicuna_v1").encode_prompt(conversation(False), tokenizer)])
    pixels = pixel_values(Image.open(folder / "red.png").convert("RGB"), processor)[None]
    with one_thread(), torch.no_grad():
        logits = model(input_ids=ids, images=pixels).logits[0].float()
    return logits, expected_answers(model, tokenizer, folder / "red.png"), part_dtypes(model)


@pytest.mark.parametrize("half", list(HALF))
def test_half_load_gives_fp32_answers_and_logits_within_bound(checkpoint, half):
    ref_logits, ref_answers, _ = _run(checkpoint, False, None)
    logits, answers, parts = _run(checkpoint, False, half)
    assert parts == {"llm": f"cpu {half}", "tower": f"cpu {half}", "projector": f"cpu {half}"}
    assert answers == ref_answers
    bound = FULL_BOUND * UNIT[HALF[half]] * ref_logits.abs().max()
    assert (logits - ref_logits).abs().max() <= bound


@pytest.mark.parametrize("half", list(HALF))
def test_4bit_with_half_compute_matches_4bit_fp32_compute(checkpoint, half):
    ref_logits, ref_answers, ref_parts = _run(checkpoint, True, None)
    logits, answers, parts = _run(checkpoint, True, half)
    # only the LLM's linear layers are 4-bit; its output head, the tower and the projector compute in `half`
    assert ref_parts["llm"] == "cpu 4-bit+float32"
    assert parts == {"llm": f"cpu 4-bit+{half}", "tower": f"cpu {half}", "projector": f"cpu {half}"}
    assert answers == ref_answers == _run(checkpoint, False, None)[1]
    bound = FOUR_BIT_BOUND_BF16_U * UNIT[torch.bfloat16] * ref_logits.abs().max()
    assert (logits - ref_logits).abs().max() <= bound
