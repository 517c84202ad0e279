"""The tiny LLM builder: seeded, loadable through from_pretrained, and skipped when already built."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from comm_tower.zoo.tiny_lm import build_tiny_llama

CORPUS = ["a tiny corpus for a tiny tokenizer", "USER: hello ASSISTANT: hi there"]


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_same_seed_same_build_and_a_finished_build_is_not_redone(tmp_path):
    a = build_tiny_llama(tmp_path / "a", CORPUS, vocab_size=300, seed=0)
    b = build_tiny_llama(tmp_path / "b", CORPUS, vocab_size=300, seed=0)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_llama(tmp_path / "a", CORPUS, vocab_size=300, seed=0) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp
    c = build_tiny_llama(tmp_path / "a", CORPUS, vocab_size=300, seed=1)  # other settings: rebuilt
    assert not torch.equal(_weights(c)["model.embed_tokens.weight"], wa["model.embed_tokens.weight"])


def test_init_std_sets_the_spread_of_the_random_weights_and_is_part_of_the_build_key(tmp_path):
    default = build_tiny_llama(tmp_path / "m", CORPUS, vocab_size=300, hidden_size=64)
    stamp = (default / "model.safetensors").stat().st_mtime_ns
    wide = build_tiny_llama(tmp_path / "m", CORPUS, vocab_size=300, hidden_size=64, init_std=0.1)
    assert (wide / "model.safetensors").stat().st_mtime_ns != stamp  # other settings: rebuilt
    weights = _weights(wide)
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "lm_head.weight"):
        assert abs(weights[name].float().std().item() - 0.1) < 0.01, name
    config = AutoModelForCausalLM.from_pretrained(wide).config
    assert config.initializer_range == 0.1
    small = build_tiny_llama(tmp_path / "s", CORPUS, vocab_size=300, hidden_size=64, init_std=0.02)
    assert abs(_weights(small)["model.embed_tokens.weight"].float().std().item() - 0.02) < 0.002


def test_build_loads_back_with_special_tokens_and_a_chat_template(tmp_path):
    path = build_tiny_llama(tmp_path / "m", CORPUS, vocab_size=300, hidden_size=32, layers=1)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert [tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token] == ["<s>", "</s>", "<unk>", "<pad>"]
    assert len({tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id}) == 4
    ids = tok("hello there", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    assert model(ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert model.config.vocab_size == len(tok) and model.config.hidden_size == 32
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<s><|user|>\nhi</s>\n<|assistant|>\n"


def test_decimal_numbers_stay_whole_and_the_text_round_trips(tmp_path):
    boxes = [f"The {w} is at [0.28, 0.03, 0.72, 0.47]. Count: 3." for w in ("dog", "cat", "car")] * 20
    path = build_tiny_llama(tmp_path / "m", boxes, vocab_size=400, hidden_size=32, layers=1)
    tok = AutoTokenizer.from_pretrained(path)
    text = "The cat is at [0.28, 0.03, 0.72, 0.47]."
    # each number one token (GPT-2's split would give "0", ".", "28"); words whole, as the corpus repeats them
    expected = ["The", "Ġcat", "Ġis", "Ġat", "Ġ[", "0.28", ",", "Ġ0.03", ",", "Ġ0.72", ",", "Ġ0.47", "]."]
    assert tok.tokenize(text) == expected
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text
    unseen = "A 12.5 cm box, 3 items; isn't it?"  # numbers and words the corpus never had still round-trip
    assert tok.decode(tok(unseen).input_ids, skip_special_tokens=True) == unseen
