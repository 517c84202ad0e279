"""Build a tiny Llama LLM and a locally trained tokenizer (tests and the demo; no hub download)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
_MARKER = "tiny_lm_build.json"

# A minimal chat format: each turn is "<|role|>\n{content}</s>\n"; the generation prompt is "<|assistant|>\n".
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

DEFAULT_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the image? ASSISTANT: A red square on a white background.",
    "USER: How many cats are there? ASSISTANT: There are two cats sitting on a sofa.",
    "A photo of a dog running on the beach. A blue car parked next to a tree.",
    "Describe the picture in detail. The picture shows a kitchen with a table and four chairs.",
]


LLAMA_INIT_STD = 0.02  # Llama's own `initializer_range`

# GPT-2's pre-tokenizer split, except that a decimal number ("0.28", " 0.72") stays one piece: a box then costs
# 9 tokens instead of 17 once BPE has merged its numbers (the demo's stage-1 captions get 28 % shorter).
_PIECES = r"'s|'t|'re|'ve|'m|'ll|'d| ?\d+\.\d+| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Part of the build fingerprint: bump it when the tokenizer's training changes, so caches are rebuilt.
TOKENIZER_VERSION = 2


def _fingerprint(corpus: list[str], **params: object) -> str:
    """A stable hash of everything that determines the build."""
    blob = json.dumps({"corpus": corpus, **params}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _train_tokenizer(corpus: list[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `corpus` that adds `<s>` in front of every text."""
    specials = [UNK, BOS, EOS, PAD, *ROLE_TOKENS]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=model_max_length,
        padding_side="right",
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def is_complete_build(out_dir: Path, fingerprint: str | None = None) -> bool:
    """True when `out_dir` holds a finished build (with the given fingerprint, if one is given)."""
    marker = Path(out_dir) / _MARKER
    if not marker.is_file():
        return False
    try:
        saved = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return fingerprint is None or saved.get("fingerprint") == fingerprint


def build_tiny_llama(
    out_dir: str | Path,
    corpus: list[str] | None = None,
    vocab_size: int = 384,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    model_max_length: int = 512,
    seed: int = 0,
    init_std: float = LLAMA_INIT_STD,
) -> Path:
    """Train a tokenizer on `corpus`, build a random tiny LlamaForCausalLM, save both to `out_dir`.

    `init_std`: standard deviation of the random weights (`initializer_range`; Llama's own is 0.02).
    """
    out = Path(out_dir)
    corpus = list(corpus) if corpus else list(DEFAULT_CORPUS)
    params = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        layers=layers,
        heads=heads,
        model_max_length=model_max_length,
        seed=seed,
        tokenizer_version=TOKENIZER_VERSION,
    )
    if init_std != LLAMA_INIT_STD:  # only then, so the fingerprints of existing builds stay valid
        params["init_std"] = init_std
    fingerprint = _fingerprint(corpus, **params)
    if is_complete_build(out, fingerprint):
        return out
    if out.exists() and any(out.iterdir()):
        logger.info("rebuilding tiny LLM in %s: existing build is incomplete or has other settings", out)

    tokenizer = _train_tokenizer(corpus, vocab_size, model_max_length)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max(model_max_length, 64),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=init_std,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)

    # Build next to the target and rename, so a half-written folder is never taken for a build.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"fingerprint": fingerprint, **params}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        try:
            tmp.rename(out)
        except OSError:
            if not is_complete_build(out, fingerprint):  # another process did not just finish it
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built tiny LLM (%d params, vocab %d) in %s", model.num_parameters(), len(tokenizer), out)
    return out
