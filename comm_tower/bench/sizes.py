"""Benchmark sizes (tiny, ViT-B, ViT-L/336) and their random-weight encoder folders and COMM specs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model

from comm_tower.registry import Registry
from comm_tower.spec import CommSpec
from comm_tower.zoo import load_preset, resolve_spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSize:
    """Both encoders' shapes, the layers COMM takes from each, and the LLM width for the projector."""

    name: str
    width: int
    depth: int
    heads: int
    image: int
    patch: int
    dino_train_image: int  # DINOv2's own position grid (interpolated to `image`, as COMM runs it)
    clip_layers: tuple[int, ...]
    dino_layers: tuple[int, ...]
    llm_width: int
    llm_layers: int

    @property
    def tokens(self) -> int:
        """Patch tokens per image."""
        return (self.image // self.patch) ** 2

    def describe(self) -> str:
        """One line for the table caption."""
        return (
            f"{self.name}: width {self.width}, {self.depth} blocks, {self.image} px / patch {self.patch} "
            f"({self.tokens} tokens), CLIP layers {self.clip_layers[0]}-{self.clip_layers[-1]}, "
            f"DINOv2 layers {self.dino_layers[0]}-{self.dino_layers[-1]}"
        )


SIZES: Registry[BenchSize] = Registry("benchmark size")
SIZES.register("tiny")(
    BenchSize("tiny", 64, 4, 4, 64, 8, 72, (1, 2, 3, 4), (3, 4), llm_width=64, llm_layers=2)
)
SIZES.register("base")(
    BenchSize(
        "base", 768, 12, 12, 224, 16, 224, tuple(range(1, 13)), (10, 11, 12), llm_width=2048, llm_layers=2
    )
)
SIZES.register("large")(
    BenchSize(
        "large", 1024, 24, 16, 336, 14, 518, tuple(range(1, 25)), tuple(range(19, 25)), 4096, llm_layers=2
    )
)


def encoder_configs(size: BenchSize) -> dict[str, CLIPVisionConfig | Dinov2Config]:
    """CLIP and DINOv2 configs of this size (MLP ratio 4, like the real models)."""
    clip = CLIPVisionConfig(
        hidden_size=size.width,
        num_hidden_layers=size.depth,
        num_attention_heads=size.heads,
        intermediate_size=4 * size.width,
        image_size=size.image,
        patch_size=size.patch,
        projection_dim=size.width,
        hidden_act="quick_gelu",
    )
    dino = Dinov2Config(
        hidden_size=size.width,
        num_hidden_layers=size.depth,
        num_attention_heads=size.heads,
        mlp_ratio=4,
        image_size=size.dino_train_image,
        patch_size=size.patch,
    )
    return {"clip": clip, "dinov2": dino}


def build_encoder_folders(size: BenchSize, root: Path, seed: int = 0) -> dict[str, Path]:
    """Random-weight CLIP and DINOv2 of `size`, saved with `save_pretrained` under `root` (reused if present)."""
    classes = {"clip": CLIPVisionModel, "dinov2": Dinov2Model}
    out = {}
    for i, (name, config) in enumerate(encoder_configs(size).items()):
        folder = root / size.name / name
        out[name] = folder
        if (folder / "config.json").is_file():
            continue
        torch.manual_seed(seed + i)
        model = classes[name](config)
        model.save_pretrained(folder)
        del model
        logger.info("saved random %s %s to %s", size.name, name, folder)
    return out


def comm_preset(size: BenchSize, folders: dict[str, Path]) -> dict:
    """The `comm` preset's structure with this size's layers and weight folders."""
    return {
        "name": f"bench-comm-{size.name}",
        "description": f"COMM at benchmark size {size.name} (random weights)",
        "encoders": [
            {
                "name": "clip",
                "family": "clip",
                "path": str(folders["clip"]),
                "layers": list(size.clip_layers),
                "fusion": "lln_layerscale",
            },
            {
                "name": "dinov2",
                "family": "dinov2",
                "path": str(folders["dinov2"]),
                "layers": list(size.dino_layers),
                "fusion": "lln_layerscale",
                "align": {"kind": "mlp", "blocks": 2, "ratio": 4, "activation": "gelu"},
            },
        ],
        "branch_fusion": "concat",
    }


def comm_spec(size: BenchSize, root: Path) -> CommSpec:
    """The resolved COMM spec of `size`, its preset written to `root` and read through the zoo."""
    folders = build_encoder_folders(size, root)
    preset = root / size.name / "comm.json"
    preset.write_text(json.dumps(comm_preset(size, folders), indent=1))
    return resolve_spec(load_preset(str(preset)))
