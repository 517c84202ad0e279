"""The model card (`README.md` with Hugging Face card metadata) of an exported `comm_llava` checkpoint.

Everything in it is read from the checkpoint: the LLM and tower from `config.json`, the run from
`trainer_state.json` (what comm-train writes), evaluation scores from comm-eval `--scores-file` JSONs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from comm_tower.hub.remote_code import SUPPORTED_TRANSFORMERS

logger = logging.getLogger(__name__)
TRAINER_STATE = "trainer_state.json"


def read_eval_scores(files: list[Path]) -> dict[str, dict[str, float]]:
    """`{task: {metric: value}}` from comm-eval scores files (the task is the file's stem); others are skipped."""
    out: dict[str, dict[str, float]] = {}
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("%s: not a readable scores file (%s); left out of the card", path, err)
            continue
        numbers = {
            k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if numbers:
            out[path.stem] = numbers
    return out


def found_eval_files(checkpoint: Path) -> list[Path]:
    """comm-eval scores files kept beside a checkpoint: `eval/*.json` and `*scores*.json`."""
    return sorted({*checkpoint.glob("eval/*.json"), *checkpoint.glob("*scores*.json")})


def training_run(checkpoint: Path) -> dict[str, Any]:
    """Steps, epochs, batch size and last logged loss from the run's `trainer_state.json` (empty if none)."""
    path = checkpoint / TRAINER_STATE
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    losses = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
    run = {
        "steps": state.get("global_step"),
        "epochs": state.get("num_train_epochs"),
        "batch size per device": state.get("train_batch_size"),
        "last logged loss": round(losses[-1], 4) if losses else None,
    }
    return {k: v for k, v in run.items() if v is not None}


def _tower_lines(config: Any) -> list[str]:
    spec = config.mm_comm or {}
    lines = []
    for enc in spec.get("encoders", []):
        layers = enc.get("layers")
        lines.append(
            f"  - `{enc.get('name')}` ({enc.get('family')}): layers {layers}, fusion `{enc.get('fusion', '-')}`"
        )
    return lines


def render_card(
    config: Any,
    checkpoint: Path,
    eval_scores: dict[str, dict[str, float]],
    repo_id: str = "path/to/this/checkpoint",
) -> str:
    """The card's markdown: front matter, what the model is, how it was trained, how to load it, scores."""
    text = config.text_config
    base = getattr(text, "_name_or_path", "") or getattr(text, "model_type", "unknown")
    tower = config.mm_vision_tower or (config.mm_comm or {}).get("name", "comm")
    run = training_run(checkpoint)
    front = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags:",
        "  - comm",
        "  - llava",
        "  - multimodal",
        "  - custom_code",
        *([f"base_model: {base}"] if "/" in str(base) else []),
        "---",
    ]
    body = [
        f"# COMM model: {text.model_type} LLM + COMM tower `{tower}`",
        "",
        "A LLaVA-style multimodal causal LM: a COMM vision tower (multi-level features of several frozen",
        "encoders merged by learnable per-layer weights) feeds a projector whose outputs take the place of",
        "the `<image>` tag in the prompt.",
        "",
        "## Model",
        f"- Base LLM: `{base}` ({text.model_type}, hidden size {config.hidden_size}, vocabulary {config.vocab_size})",
        f"- Tower preset: `{tower}`, image size {(config.mm_comm or {}).get('image_size', '?')} px",
        *_tower_lines(config),
        f"- Projector: `{config.mm_projector_type}` ({config.mm_hidden_size} -> {config.hidden_size})",
        f"- Chat format: template `{config.conv_template or 'vicuna_v1'}`"
        + (f", system prompt {config.system_prompt!r}" if config.system_prompt else ""),
        f"- Images: `{config.image_aspect_ratio}`",
        "",
        "## Training",
        f"- Data: {config.train_data or 'not recorded'}",
        *([f"- {k.capitalize()}: {v}" for k, v in run.items()] or ["- Run: no trainer_state.json was found"]),
        "",
        *_eval_section(eval_scores),
        "## How to load",
        "",
        "With `comm_tower` installed (`pip install comm-tower`):",
        "",
        "```python",
        "import comm_tower  # registers comm_llava with transformers' auto classes",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        f'model = AutoModelForImageTextToText.from_pretrained("{repo_id}")',
        f'processor = AutoProcessor.from_pretrained("{repo_id}")',
        "```",
        "",
        f"With transformers alone ({SUPPORTED_TRANSFORMERS}), using the code in this folder:",
        "",
        "```python",
        "from PIL import Image",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        f'model = AutoModelForImageTextToText.from_pretrained("{repo_id}", trust_remote_code=True)',
        f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
        'messages = [{"role": "user", "content": [{"type": "image", "image": Image.open("view.jpg")},',
        '                                         {"type": "text", "text": "What is in the image?"}]}]',
        "inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True)",
        "new_tokens = model.generate(**inputs, max_new_tokens=64, do_sample=False)",
        "print(processor.decode(new_tokens[0], skip_special_tokens=True))",
        "```",
        "",
        f'or `pipeline("image-text-to-text", model="{repo_id}", trust_remote_code=True)`.',
        "",
        "In LLaVA code: `comm_tower.load_pretrained_model` has LLaVA's signature and return value, so LLaVA's",
        "serving and evaluation scripts take this checkpoint; `import llava_patch` first makes LLaVA's own",
        "builders build the COMM tower `mm_vision_tower` names (for checkpoints trained in LLaVA's layout):",
        "",
        "```python",
        "import llava_patch  # noqa: F401",
        "from comm_tower import load_pretrained_model",
        "",
        f'tokenizer, model, image_processor, context_len = load_pretrained_model("{repo_id}")',
        "```",
        "",
        f"or from the command line: `comm-chat --model-path {repo_id} --image-file view.jpg`.",
        "",
    ]
    return "\n".join([*front, *body])


def _eval_section(scores: dict[str, dict[str, float]]) -> list[str]:
    if not scores:
        return ["## Evaluation", "", "No comm-eval scores were found beside the checkpoint.", ""]
    lines = ["## Evaluation", "", "| task | metric | value |", "|---|---|---|"]
    for task, metrics in sorted(scores.items()):
        lines += [f"| {task} | {name} | {value:.4g} |" for name, value in sorted(metrics.items())]
    return [*lines, ""]
