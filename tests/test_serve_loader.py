"""comm_tower.inference.loading on a tiny trained checkpoint: fp32, NF4 4-bit and int8 on CPU, and its errors."""

from __future__ import annotations

import pytest
import torch
from _serve_helpers import ANSWER_1, conversation, expected_answers, one_thread, trained_checkpoint
from PIL import Image
from transformers import AutoModelForCausalLM

from comm_tower.data.templates import get_template
from comm_tower.inference.generation import pixel_values
from comm_tower.inference.loading import load_pretrained_model, part_dtypes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpt(tiny_dir):
    return trained_checkpoint(tiny_dir)


def _teacher_forced_logits(bundle, root):
    """Next-token logits at every position of the taught two-turn chat (image tokens included)."""
    tokenizer, model, processor, _ = bundle
    ids, _ = get_template("vicuna_v1").encode(conversation(with_answers=True), tokenizer)
    pixels = pixel_values(Image.open(root / "red.png"), processor).unsqueeze(0)
    with one_thread(), torch.no_grad():
        return model(input_ids=torch.tensor([ids]), images=pixels).logits[0].float()


@pytest.fixture(scope="module")
def fp32(ckpt):
    with one_thread():
        return load_pretrained_model(str(ckpt / "full"), device="cpu")


@pytest.fixture(scope="module")
def nf4(ckpt):
    with one_thread():
        return load_pretrained_model(str(ckpt / "full"), load_4bit=True, device="cpu")


def test_fp32_load_matches_plain_from_pretrained_and_answers(fp32, ckpt):
    tokenizer, model, processor, context_len = fp32
    assert context_len == tokenizer.model_max_length == 512
    assert model.config.use_cache and model.language_model.config.use_cache  # saved False by training
    assert not model.training
    assert part_dtypes(model) == {"llm": "cpu float32", "tower": "cpu float32", "projector": "cpu float32"}
    reference = AutoModelForCausalLM.from_pretrained(ckpt / "full").eval()  # HF's own loading, untouched
    for (name, p), (ref_name, q) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert name == ref_name and torch.equal(p, q), name
    assert processor is model.get_vision_tower().image_processor
    # the tiny model learnt its first answer; the loaded checkpoint gives it back
    assert expected_answers(model, tokenizer, ckpt / "red.png")[0] == ANSWER_1


def test_4bit_quantises_only_the_llm_nf4_double_quant(nf4):
    import bitsandbytes as bnb

    _, model, _, _ = nf4
    llm_linears = {n: m for n, m in model.language_model.named_modules() if isinstance(m, torch.nn.Linear)}
    four_bit = {n for n, m in llm_linears.items() if isinstance(m, bnb.nn.Linear4bit)}
    assert four_bit == set(llm_linears) - {"lm_head"}  # every LLM linear but the output head
    state = model.language_model.model.layers[0].self_attn.q_proj.weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # nested = double quantisation of the constants
    assert state.dtype == torch.float32  # compute dtype on CPU
    for part in (model.get_vision_tower(), model.get_model().mm_projector, model.language_model.lm_head):
        assert not any(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in part.modules())
        assert {p.dtype for p in part.parameters()} == {torch.float32}
    assert part_dtypes(model)["tower"] == "cpu float32" and part_dtypes(model)["projector"] == "cpu float32"


def test_4bit_logits_stay_close_to_fp32_and_it_generates(fp32, nf4, ckpt):
    ref = _teacher_forced_logits(fp32, ckpt)
    q4 = _teacher_forced_logits(nf4, ckpt)
    # Measured on this checkpoint (logits up to ~11): max |diff| 1.13 (10% of max |logit|), cosine >= 0.9993,
    # KL(fp32 || 4-bit) max 0.097 / mean 0.003, argmax equal at every position. Bounds leave ~2x room.
    diff = (ref - q4).abs().max() / ref.abs().max()
    assert diff < 0.2, f"4-bit logits differ by {diff:.3f} of the largest fp32 logit"
    cos = torch.nn.functional.cosine_similarity(ref, q4, dim=-1)
    assert cos.min() > 0.995
    logp, logq = ref.log_softmax(-1), q4.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    assert kl.mean() < 0.01 and kl.max() < 0.25
    agree = (ref.argmax(-1) == q4.argmax(-1)).float().mean()
    assert agree > 0.95
    tokenizer, model, _, _ = nf4
    answers = expected_answers(model, tokenizer, ckpt / "red.png", max_new_tokens=8)
    assert answers[0] == ANSWER_1  # the 4-bit model still gives the taught answer


def test_8bit_keeps_tower_and_projector_float(ckpt):
    import bitsandbytes as bnb

    with one_thread():
        tokenizer, model, _, _ = load_pretrained_model(str(ckpt / "full"), load_8bit=True)
    assert isinstance(model.language_model.model.layers[0].mlp.down_proj, bnb.nn.Linear8bitLt)
    assert {p.dtype for p in model.get_model().parameters()} == {torch.float32}
    assert expected_answers(model, tokenizer, ckpt / "red.png", max_new_tokens=8)[0] == ANSWER_1


def test_errors_name_the_input_and_the_fix(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_pretrained_model(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="holds no model weights"):
        load_pretrained_model(str(tmp_path))
    with pytest.raises(ValueError, match="pick one"):
        load_pretrained_model(str(ckpt / "full"), load_4bit=True, load_8bit=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_pretrained_model(str(ckpt / "full"), device="cuda")
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    (stage1 / "mm_projector.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="--model-base"):
        load_pretrained_model(str(stage1))
