"""A demo-sized random comm_llava checkpoint, exported with remote code, and comm-chat's greedy tokens for it.

Used by tests/test_hub_export.py (comm_tower installed) and by scripts/test_remote_code.sh, which runs
`python tests/_hub_helpers.py OUT` to prepare what tests_remote/ checks in venvs without comm_tower.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

QUESTION = "What is in the image?"
MAX_NEW_TOKENS = 8
EXPECTED = "expected.json"


def demo_sized_checkpoint(root: Path) -> Path:
    """An untrained comm_llava model of the demo's sizes (tiny-comm tower, the demo's Llama) saved under `root`."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _serve_helpers import random_checkpoint

    from comm_tower.demo.models import build_demo_llm

    lm = build_demo_llm(root / "lm")
    torch.manual_seed(0)
    return random_checkpoint(lm, root / "ckpt", tower="tiny-comm", image_aspect_ratio="pad")


def comm_chat_tokens(checkpoint: Path, image_path: Path) -> list[int]:
    """The greedy tokens comm-chat's engine (`Assistant`: recorded chat format, pixels, generate arguments) gives."""
    from PIL import Image

    from comm_tower.inference.assistant import Assistant
    from comm_tower.inference.generation import GenerationConfig

    assistant = Assistant.load(str(checkpoint), device="cpu")
    image = Image.open(image_path)
    ids = assistant.question_ids(QUESTION, with_image=True)
    kwargs = assistant.generate_kwargs(
        [ids], [assistant.pixels(image)], [image.size], GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
    )
    with torch.inference_mode():
        return assistant.model.generate(**kwargs)[0].tolist()


def prepare(root: Path) -> Path:
    """Checkpoint, its export (`root/hf`), a test image and `root/expected.json` with comm-chat's tokens."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _serve_helpers import red_image

    from comm_tower.hub.export import export_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    checkpoint = demo_sized_checkpoint(root)
    image = red_image(root / "red.png")
    export_checkpoint(checkpoint, root / "hf")
    tokens = comm_chat_tokens(checkpoint, image)
    record = {"question": QUESTION, "image": str(image), "max_new_tokens": MAX_NEW_TOKENS, "tokens": tokens}
    (root / EXPECTED).write_text(json.dumps(record))
    return root


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(prepare(Path(sys.argv[1])))
