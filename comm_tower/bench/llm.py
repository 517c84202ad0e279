"""A random Llama-architecture LLM of the benchmark size, wrapped with the COMM tower and projector, and saved."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from comm_tower.bench.sizes import BenchSize
from comm_tower.model import CommLlavaForCausalLM, assemble_model
from comm_tower.zoo.tiny_lm import build_tiny_llama

VOCAB = 32000  # Vicuna's vocabulary: the output head's cost is part of every step and token


def llm_config(size: BenchSize, vocab: int | None = None) -> LlamaConfig:
    """Vicuna-shaped blocks (MLP ratio 11008/4096, head dim 128 or width/4) at `size.llm_width`, few layers."""
    width = size.llm_width
    return LlamaConfig(
        vocab_size=vocab or VOCAB,
        hidden_size=width,
        intermediate_size=-(-int(width * 11008 / 4096) // 64) * 64,  # 4-bit CPU kernels need multiples of 64
        num_hidden_layers=size.llm_layers,
        num_attention_heads=max(width // 128, 4),
        num_key_value_heads=max(width // 128, 4),
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def comm_model(
    size: BenchSize,
    preset: Path,
    vocab: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> CommLlavaForCausalLM:
    """LLM + COMM tower (weights from the preset's folders) + a fresh `mlp2x_gelu` projector, in `dtype` (built
    in it: a 7B-width LLM in fp16 never exists in fp32)."""
    torch.manual_seed(seed)
    lm = LlamaForCausalLM._from_config(llm_config(size, vocab), dtype=dtype)
    lm.config._attn_implementation = "sdpa"
    model = assemble_model(lm, str(preset), "mlp2x_gelu")
    model.config.tokenizer_model_max_length = 2048
    return model


def save_checkpoint(
    size: BenchSize,
    preset: Path,
    root: Path,
    dtype: torch.dtype = torch.float32,
    shard_size: str | None = None,
) -> Path:
    """A full comm_llava checkpoint (random LLM of `size`, local tokenizer) as comm-train saves one; every weight
    in `dtype`, in `shard_size` shards (e.g. "1GB", as released 7B checkpoints are) when given."""
    parts = ["chat_model"]
    if dtype != torch.float32 or shard_size is not None:
        parts += [str(dtype).removeprefix("torch."), f"{size.llm_layers}L"]
    if shard_size is not None:
        parts.append(shard_size)
    out = root / size.name / "_".join(parts)
    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_llama(root / "tokenizer_lm"))
    vocab = len(tokenizer) if size.name == "tiny" else max(VOCAB, len(tokenizer))
    model = comm_model(size, preset, vocab=vocab, dtype=dtype)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.language_model.config, key, getattr(tokenizer, key))
    model.config.image_aspect_ratio = "pad"
    model.to(dtype).save_pretrained(out, **({"max_shard_size": shard_size} if shard_size else {}))
    tokenizer.save_pretrained(out)
    return out
