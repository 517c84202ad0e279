"""Tiny LLaVA-NeXT inputs: 224 px COMM encoders (NeXT's anyres needs a 224/336/384/448/512 px crop), a preset
file for them, images of several aspect ratios, LLaVA-format data and NeXT's `train()` arguments.

Only used inside `.venv-llava-next` (transformers 4.40, NeXT from shared/third_party); nothing is downloaded.
The tiny Llama, the drawing and the launcher runner are the LLaVA 1.2 tests' (`_llava_helpers`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _llava_helpers import write_dataset

CROP, PATCH = 224, 28  # an 8x8 token grid per crop, as the tiny presets have at 64 px
# (width, height) of the training pictures: wide, tall, square and tiny (smaller than one crop)
IMAGE_SIZES = {"wide": (300, 100), "tall": (90, 270), "square": (200, 200), "tiny": (12, 9)}
PINPOINTS = "(1x1),...,(3x3)"


def build_tiny_next_tower(root: Path, seed: int = 0) -> Path:
    """Tiny random CLIP and DINOv2 at 224 px, 28 px patches, and a COMM preset over them; returns the preset."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

    common = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, patch_size=PATCH
    )
    torch.manual_seed(seed)
    CLIPVisionModel(CLIPVisionConfig(image_size=CROP, **common)).save_pretrained(root / "clip")
    torch.manual_seed(seed + 1)  # trained at a larger size, like DINOv2: position embeddings get interpolated
    Dinov2Model(Dinov2Config(image_size=CROP + PATCH, **common)).save_pretrained(root / "dinov2")
    preset = {
        "name": "tiny-next-comm",
        "description": "COMM layout (all CLIP blocks; the last DINOv2 blocks with the MLP alignment) at 224 px.",
        "encoders": [
            {"name": "clip", "family": "clip", "path": str(root / "clip"), "layers": [1, 2, 3]},
            {
                "name": "dinov2",
                "family": "dinov2",
                "path": str(root / "dinov2"),
                "layers": [2, 3],
                "align": {"kind": "mlp", "blocks": 2, "ratio": 4, "activation": "gelu"},
            },
        ],
        "branch_fusion": "concat",
    }
    path = root / "tiny-next-comm.json"
    path.write_text(json.dumps(preset, indent=1))
    return path


def write_next_dataset(root: Path) -> dict[str, Path]:
    """One picture per (colour, shape), cycling through the four aspect ratios; stage-1 and stage-2 JSON."""
    return write_dataset(root, IMAGE_SIZES)


def next_train_args(
    base: Path,
    tower: Path,
    data: dict[str, Path],
    out: Path,
    stage: int,
    steps: int,
    adapter: Path | None = None,
) -> list[str]:
    """NeXT's `scripts/train/pretrain_clip.sh` / `finetune_ov.sh` flags with `--vision_tower <COMM preset>`,
    shrunk to a few CPU steps (no DeepSpeed, fp32, sdpa attention)."""
    common = [
        "--model_name_or_path", str(base),
        "--image_folder", str(data["images"]),
        "--vision_tower", str(tower),
        "--mm_projector_type", "mlp2x_gelu",
        "--mm_vision_select_layer", "-2",
        "--mm_use_im_start_end", "False",
        "--mm_use_im_patch_token", "False",
        "--image_aspect_ratio", "anyres_max_9",
        "--image_grid_pinpoints", PINPOINTS,
        "--mm_patch_merge_type", "spatial_unpad",
        "--output_dir", str(out),
        "--num_train_epochs", "1",
        "--max_steps", str(steps),
        "--per_device_train_batch_size", "8",  # the whole data set: one batch per step
        "--gradient_accumulation_steps", "1",
        "--evaluation_strategy", "no",
        "--save_strategy", "no",
        "--weight_decay", "0.",
        "--warmup_ratio", "0.",
        "--lr_scheduler_type", "constant",
        "--logging_steps", "1",
        "--model_max_length", "2048",
        "--gradient_checkpointing", "True",
        "--lazy_preprocess", "True",
        "--dataloader_num_workers", "0",
        "--report_to", "none",
        "--attn_implementation", "sdpa",
        "--use_cpu", "True",
        "--seed", "0",
    ]  # fmt: skip
    if stage == 1:
        return [
            *common,
            "--version", "plain",
            "--data_path", str(data["stage1"]),
            "--mm_tunable_parts", "mm_mlp_adapter",
            "--learning_rate", "1e-3",
        ]  # fmt: skip
    return [
        *common,
        "--version", "v1",
        "--data_path", str(data["stage2"]),
        "--pretrain_mm_mlp_adapter", str(adapter),
        "--mm_tunable_parts", "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "--mm_vision_tower_lr", "2e-6",
        "--group_by_modality_length", "True",
        "--learning_rate", "1e-4",
    ]  # fmt: skip
