"""Tiny LLaVA inputs for the `llava` tests: a Llama LLM with a sentencepiece tokenizer, a CLIP folder
named like OpenAI's, images and conversations in LLaVA's JSON format, and a runner for the launchers.

Only used inside `.venv-llava` (transformers 4.37); nothing here is downloaded.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIP_NAME = "openai/clip-vit-large-patch14-336"
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")
SYSTEM = "A chat between a curious user and an artificial intelligence assistant."


def _corpus() -> list[str]:
    words = [f"A {c} {s} on a white background." for c in COLOURS for s in SHAPES]
    return [
        SYSTEM,
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        "USER: What is in the image? ASSISTANT: What colour is the shape? How many shapes are there?",
        "There is one shape. Describe the picture briefly. Is it round? Yes. No.",
        *words,
    ] * 4


def build_tiny_llama(out: Path, seed: int = 0) -> Path:
    """A 2-layer, width-64 Llama and a sentencepiece `LlamaTokenizer` (what LLaVA loads with use_fast=False)."""
    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=model_file,
        vocab_size=400,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=True,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
        num_threads=1,
        # as Llama's tokenizer.model: text not normalised, spaces kept; transformers 5's fast conversion of it then
        # gives the ids of LLaVA's slow tokenizer (checked in test_llava_convert)
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
    )
    (out / "tokenizer.model").write_bytes(model_file.getvalue())
    tokenizer = LlamaTokenizer(
        vocab_file=str(out / "tokenizer.model"), legacy=True
    )  # as Vicuna-1.5, which LLaVA-1.5 fine-tunes
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def build_tiny_openai_clip(root: Path, seed: int = 0) -> Path:
    """Tiny random CLIP weights + processor saved at `root/openai/clip-vit-large-patch14-336`."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    folder = root / CLIP_NAME
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(seed)
    CLIPVisionModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return folder


def draw(colour: str, shape: str, size: tuple[int, int] = (80, 60)) -> Image.Image:
    """A non-square picture of one coloured shape (exercises LLaVA's `pad` aspect ratio)."""
    img = Image.new("RGB", size, (255, 255, 255))
    box = (20, 10, 60, 50)
    pen = ImageDraw.Draw(img)
    (pen.rectangle if shape == "square" else pen.ellipse)(box, fill=COLOURS[colour])
    return img


def write_dataset(root: Path, sizes: dict[str, tuple[int, int]] | None = None) -> dict[str, Path]:
    """Images plus stage-1 (caption, `plain`) and stage-2 (multi-turn, `vicuna_v1`) JSON files.

    One picture per (colour, shape); with `sizes` ({kind: (width, height)}) the pictures cycle through them.
    """
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    kinds = list(sizes or {})
    stage1, stage2 = [], []
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        if sizes:
            kind = kinds[i % len(kinds)]
            name = f"{kind}_{colour}_{shape}.png"
            draw(colour, shape, sizes[kind]).save(images / name)
        else:
            name = f"{colour}_{shape}.png"
            draw(colour, shape).save(images / name)
        stage1.append(
            {
                "id": f"s1-{i}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the picture briefly."},
                    {"from": "gpt", "value": f"A {colour} {shape} on a white background."},
                ],
            }
        )
        stage2.append(
            {
                "id": f"s2-{i}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is the shape?"},
                    {"from": "gpt", "value": f"The shape is {colour}."},
                    {"from": "human", "value": "Is it round?"},
                    {"from": "gpt", "value": "Yes." if shape == "circle" else "No."},
                ],
            }
        )
    paths = {"images": images, "stage1": root / "stage1.json", "stage2": root / "stage2.json"}
    paths["stage1"].write_text(json.dumps(stage1))
    paths["stage2"].write_text(json.dumps(stage2))
    return paths


def llava_env(tiny_dir: Path) -> dict[str, str]:
    """Environment for a launcher subprocess: this repo importable, CPU only, offline, one thread."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        COMM_TINY_DIR=str(tiny_dir),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_DISABLED="true",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_launcher(
    module: str, args: list[str], env: dict[str, str], cwd: Path, timeout: int = 240, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m <module> ARGS`; on failure raise with the tail of its output."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{module} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
            f"--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def train_args(
    base: Path, data: dict[str, Path], out: Path, stage: int, adapter: Path | None = None
) -> list[str]:
    """LLaVA-1.5's pretrain / finetune arguments, shrunk to a few CPU steps, with `--vision_tower tiny-comm`."""
    common = [
        "--model_name_or_path", str(base),
        "--image_folder", str(data["images"]),
        "--vision_tower", "tiny-comm",
        "--mm_projector_type", "mlp2x_gelu",
        "--mm_vision_select_layer", "-2",
        "--mm_use_im_start_end", "False",
        "--mm_use_im_patch_token", "False",
        "--image_aspect_ratio", "pad",
        "--output_dir", str(out),
        "--num_train_epochs", "1",
        "--max_steps", "3",
        "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1",
        "--save_strategy", "no",
        "--weight_decay", "0.",
        "--warmup_ratio", "0.",
        "--lr_scheduler_type", "constant",
        "--logging_steps", "1",
        "--model_max_length", "256",
        "--lazy_preprocess", "True",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--use_cpu", "True",
        "--seed", "0",
    ]  # fmt: skip
    if stage == 1:
        return [
            *common,
            "--version", "plain",
            "--data_path", str(data["stage1"]),
            "--tune_mm_mlp_adapter", "True",
            "--learning_rate", "1e-3",
        ]  # fmt: skip
    return [
        *common,
        "--version", "v1",
        "--data_path", str(data["stage2"]),
        "--pretrain_mm_mlp_adapter", str(adapter),
        "--group_by_modality_length", "True",
        "--learning_rate", "2e-5",
    ]  # fmt: skip


def train_stages(root: Path, tiny_dir: Path) -> SimpleNamespace:
    """Stage 1 then stage 2 through `python -m llava_patch.launch.train`, as LLaVA-1.5's scripts run them."""
    base = build_tiny_llama(root / "tiny-llama")
    data = write_dataset(root / "data")
    env = llava_env(tiny_dir)
    stage1 = root / "stage1"
    stage2 = root / "llava-tiny-comm"  # load_pretrained_model wants 'llava' in the name
    log1 = run_launcher("llava_patch.launch.train", train_args(base, data, stage1, 1), env, root)
    adapter = stage1 / "mm_projector.bin"
    log2 = run_launcher("llava_patch.launch.train", train_args(base, data, stage2, 2, adapter), env, root)
    return SimpleNamespace(
        root=root,
        base=base,
        data=data,
        env=env,
        stage1=stage1,
        stage2=stage2,
        adapter=adapter,
        logs=(log1, log2),
    )
