"""`CommProcessor`: the tower's image processor + the tokenizer + the chat format the model was trained in.

transformers' multimodal interface over the one way this package builds inputs: `__call__(images=..., text=...)`
and `apply_chat_template(messages)` give the `input_ids` (IMAGE_TOKEN_INDEX where an image goes),
`attention_mask` and `pixel_values` that `CommLlavaForCausalLM.generate` takes, built with the same
`ChatFormat` prompt, the same pixels (`processor.pixel_values`) and the same tokenization as `comm-chat`.

A processor lives beside its model: the image settings (tower spec, aspect ratio) and the chat format are read
from the checkpoint's `config.json`; `processor_config.json` only names the class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, BatchFeature
from transformers.processing_utils import ProcessorMixin

from comm_tower.builders import build_vision_tower
from comm_tower.constants import DEFAULT_IMAGE_TOKEN
from comm_tower.data.images import load_image
from comm_tower.data.templates import Message, get_template, normalize_image_tags, tokenize_with_images
from comm_tower.inference.prompts import ChatFormat
from comm_tower.model.configuration import CommLlavaConfig
from comm_tower.processor import CommImageProcessor, pixel_values

PROCESSOR_FILE = "processor_config.json"
# from_pretrained's arguments for fetching the files (the rest concern transformers' own processors)
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


class CommProcessor(ProcessorMixin):
    """Image processor + tokenizer + chat format of one `comm_llava` checkpoint."""

    def __init__(
        self,
        image_processor: CommImageProcessor,
        tokenizer: Any,
        chat: ChatFormat | None = None,
        image_aspect_ratio: str = "pad",
    ) -> None:
        # not ProcessorMixin.__init__: it checks for transformers' own image-processor classes, and the tower's
        # processor (one crop for every encoder) is not one of them
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat = chat or ChatFormat()
        self.image_aspect_ratio = image_aspect_ratio
        self.chat_template = None  # the chat format is a registered template (`self.chat`), not Jinja

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any) -> CommProcessor:
        """The processor a `comm_llava` config describes: its tower's crop and normalisation, its chat format."""
        tower = build_vision_tower(config, delay_load=True)  # reads the spec only: no encoder is built
        return cls(
            tower.image_processor,
            tokenizer,
            ChatFormat.of(config),
            getattr(config, "image_aspect_ratio", None) or "pad",
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> CommProcessor:
        """The processor of a checkpoint (a folder or a Hub repo): its `config.json` and tokenizer files."""
        hub = {k: v for k, v in kwargs.items() if k in HUB_KWARGS}
        config = CommLlavaConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        # the tokenizer loader reads config.json too: let it trust the folder's code when the caller did
        trust = {"trust_remote_code": kwargs["trust_remote_code"]} if "trust_remote_code" in kwargs else {}
        tokenizer = AutoTokenizer.from_pretrained(
            pretrained_model_name_or_path, use_fast=True, **hub, **trust
        )
        return cls.from_config(config, tokenizer)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Write the tokenizer and `processor_config.json` (the class name; `auto_map` when exported with code)."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        files = list(self.tokenizer.save_pretrained(out))
        record: dict[str, Any] = {"processor_class": type(self).__name__}
        if kwargs.get("auto_map"):
            record["auto_map"] = kwargs["auto_map"]
        (out / PROCESSOR_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return [*files, str(out / PROCESSOR_FILE)]

    @property
    def model_input_names(self) -> list[str]:
        """What `__call__` returns and the model's `generate` takes."""
        return ["input_ids", "attention_mask", "pixel_values"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.chat.describe()}; images: {self.image_aspect_ratio})"

    # inputs ------------------------------------------------------------------------------------
    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Prompt text(s) with `<image>` tags (added in front when missing) and their images -> model inputs.

        `text` is already in the chat format (`apply_chat_template(..., tokenize=False)` gives it); images are
        PIL images or local paths, one per `<image>` tag, flat or one list per prompt.
        """
        if text is None:
            raise ValueError("CommProcessor needs `text`: a prompt, or apply_chat_template for messages")
        texts = [text] if isinstance(text, str) else list(text)
        per_prompt = _images_per_prompt(images, len(texts))
        add_bos = get_template(self.chat.template).add_bos
        rows = [
            tokenize_with_images(_tagged(t, len(imgs)), self.tokenizer, add_bos)[0]
            for t, imgs in zip(texts, per_prompt)
        ]
        data: dict[str, Any] = self._padded(rows)
        flat = [img for imgs in per_prompt for img in imgs]
        if flat:
            data["pixel_values"] = torch.stack(
                [pixel_values(_opened(img), self.image_processor, self.image_aspect_ratio) for img in flat]
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _padded(self, rows: list[list[int]]) -> dict[str, Any]:
        """Left-padded ids and mask (what `generate` wants); one prompt needs no pad token."""
        if len(rows) == 1:
            return {"input_ids": rows, "attention_mask": [[1] * len(rows[0])]}
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; set tokenizer.pad_token to batch several prompts"
            )
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        return {
            "input_ids": [[pad] * (width - len(r)) + r for r in rows],
            "attention_mask": [[0] * (width - len(r)) + [1] * len(r) for r in rows],
        }

    def apply_chat_template(
        self,
        conversation: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> Any:
        """Messages in the checkpoint's chat format, ending in the assistant's turn to answer.

        A message's `content` is a string or a list of parts: `{"type": "text", "text": ...}` and
        `{"type": "image", "image": PIL image}` (or `"path"` / `"url"`: a local file).

        `tokenize=False` gives the prompt text; `tokenize=True` its ids, or with `return_dict=True` all the model
        inputs (`pixel_values` included) as `__call__` gives them.
        """
        if not add_generation_prompt or kwargs.get("continue_final_message"):
            raise ValueError(
                "CommProcessor builds generation prompts only: the last message must be the user's"
            )
        turns, images = _turns_and_images(conversation)
        text = self.chat.prompt_text(turns, self.tokenizer)
        if not tokenize:
            return text
        inputs = self(images=images or None, text=text, return_tensors=return_tensors)
        return inputs if return_dict else inputs["input_ids"]


def _tagged(text: str, num_images: int) -> str:
    """`text` with one `<image>` tag per image: given ones kept, missing ones put in front (LLaVA's placement)."""
    tags = text.count(DEFAULT_IMAGE_TOKEN)
    if tags > num_images:
        raise ValueError(
            f"the prompt has {tags} '{DEFAULT_IMAGE_TOKEN}' tags but {num_images} image(s) came with it"
        )
    return f"{DEFAULT_IMAGE_TOKEN}\n" * (num_images - tags) + text


def _images_per_prompt(images: Any, prompts: int) -> list[list[Any]]:
    """`images` (None, one image, a flat list for one prompt, or one list per prompt) as one list per prompt."""
    if images is None:
        return [[] for _ in range(prompts)]
    if not isinstance(images, (list, tuple)):
        images = [images]
    if prompts == 1 and not any(isinstance(i, (list, tuple)) for i in images):
        return [list(images)]
    nested = [list(i) if isinstance(i, (list, tuple)) else [i] for i in images]
    if len(nested) != prompts:
        raise ValueError(
            f"{prompts} prompts but images for {len(nested)}; give one list of images per prompt"
        )
    return nested


def _opened(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return load_image(str(image).removeprefix("file://"))
    raise TypeError(f"an image must be a PIL image or a local path, got {type(image).__name__}")


def _turns_and_images(conversation: Sequence[dict[str, Any]]) -> tuple[list[Message], list[Any]]:
    """transformers' message dicts -> our `Message`s (an `<image>` tag per image part) and the images in order."""
    turns, images = [], []
    for i, message in enumerate(conversation):
        content = message.get("content", "")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        texts = []
        for part in parts:
            kind = part.get("type")
            if kind == "text":
                texts.append(part.get("text", ""))
            elif kind == "image":
                source = next((part[k] for k in ("image", "path", "url") if part.get(k) is not None), None)
                if source is None:
                    raise ValueError(f"message {i}: an image part needs 'image', 'path' or 'url'")
                images.append(source)
                texts.append(DEFAULT_IMAGE_TOKEN)
            else:
                raise ValueError(f"message {i}: part type {kind!r} is not supported; use 'text' or 'image'")
        turns.append(Message(message["role"], " ".join(t for t in texts if t)))
    return normalize_image_tags(turns, len(images)), images


AutoProcessor.register(CommLlavaConfig, CommProcessor, exist_ok=True)
