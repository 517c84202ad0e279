"""lmms-eval model plugin: `--model comm --model_args pretrained=CKPT[,conv_template=vicuna_v1,...]`.

The conversation template and system prompt default to those the checkpoint was trained with
(`conv_template=...`, `system_prompt=...` override them).

lmms-eval finds plugins through the entry-point group `lmms_eval.models`; setup.py registers
`comm = comm_tower.eval.lmms_plugin:manifest`, whose payload (a callable returning a `ModelManifest`)
points lmms-eval at `CommLmms`. Requests are answered through the same `Assistant` as comm-eval
(`comm_tower.inference`). This module imports lmms_eval, so only lmms-eval imports it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from PIL import Image
from tqdm import tqdm

from comm_tower.eval.metrics.boxes import boxes_to_original_fractions
from comm_tower.eval.scoring import ASPECT_TO_FRAME
from comm_tower.inference.assistant import Assistant
from comm_tower.inference.generation import GenerationConfig

logger = logging.getLogger(__name__)
MODEL_ID = "comm"


def manifest() -> ModelManifest:
    """Entry-point payload: where lmms-eval finds the COMM model class."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.CommLmms")


def _truncate_at_stops(text: str, until: list[str] | str | None) -> str:
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop and stop in text:
            text = text.split(stop)[0]
    return text


class CommLmms(lmms):
    """A COMM checkpoint (loaded by `comm_tower.inference.loading`) behind lmms-eval's simple-model interface."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        model_base: str | None = None,
        conv_template: str | None = None,
        system_prompt: str | None = None,
        device: str = "cpu",
        dtype: str | None = None,
        image_aspect_ratio: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int = 128,
        box_frame: str = "original",
        bundle: tuple[Any, Any, Any, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            logger.warning("comm: ignoring unknown model_args %s", sorted(kwargs))
        if bundle is None:
            if not pretrained:
                raise ValueError("comm: pass --model_args pretrained=/path/to/checkpoint")
            from comm_tower.inference.loading import load_pretrained_model

            bundle = load_pretrained_model(
                pretrained, model_base, device=device, dtype=getattr(torch, dtype) if dtype else None
            )
        self.assistant = Assistant(
            *bundle,
            conv_mode=conv_template,
            system_prompt=system_prompt,
            image_aspect_ratio=image_aspect_ratio,
        )
        self.tokenizer, self.model, self.image_processor = bundle[:3]
        self.model.eval()
        self.image_aspect_ratio = self.assistant.image_aspect_ratio
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        if box_frame not in ("original", "model"):
            raise ValueError(f"comm: box_frame must be 'original' or 'model', got {box_frame!r}")
        self.box_frame = box_frame

    # helpers -------------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        return self.task_dict[task][split][doc_id]

    def _image(self, visuals: Any) -> tuple[torch.Tensor | None, tuple[int, int] | None]:
        images = [v for v in (visuals or []) if isinstance(v, Image.Image)]
        if len(images) > 1:
            logger.warning(
                "comm: %d images in one request; the model takes one, using the first", len(images)
            )
        if not images:
            if visuals:
                kinds = sorted({type(v).__name__ for v in visuals})
                logger.warning(
                    "comm: visuals of type %s are not images (video?); answering from text only", kinds
                )
            return None, None
        img = images[0].convert("RGB")
        return self.assistant.pixels(img), img.size

    def _gen_config(self, gen_kwargs: dict[str, Any]) -> GenerationConfig:
        temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0)
        if not gen_kwargs.get("do_sample", temperature > 0):
            temperature = 0.0
        return GenerationConfig(
            max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)),
            temperature=temperature,
            top_p=gen_kwargs.get("top_p"),
            num_beams=int(gen_kwargs.get("num_beams", 1) or 1),
        )

    def _prepare(
        self, context: str, visuals: Any
    ) -> tuple[list[int], torch.Tensor | None, tuple[int, int] | None]:
        pixels, size = self._image(visuals)
        return self.assistant.question_ids(context, pixels is not None), pixels, size

    def _finish(self, text: str, size: tuple[int, int] | None, until: Any) -> str:
        text = _truncate_at_stops(text, until)
        if self.box_frame == "original" and size is not None:
            text = boxes_to_original_fractions(
                text, size[0], size[1], ASPECT_TO_FRAME[self.image_aspect_ratio]
            )
        return text

    def _generate_many(self, items: list[tuple[str, Any, dict[str, Any]]], desc: str) -> list[str]:
        """Answer (context, visuals, gen_kwargs) items, batching those with equal settings and image presence."""
        prepared = [(*self._prepare(ctx, vis), kw) for ctx, vis, kw in items]
        groups: dict[tuple, list[int]] = {}
        for i, (_, pixels, _, kw) in enumerate(prepared):
            until = kw.get("until")
            key = (self._gen_config(kw), repr(until), pixels is not None)
            groups.setdefault(key, []).append(i)
        results: list[str] = [""] * len(items)
        bar = tqdm(total=len(items), desc=desc, disable=self.rank != 0 or len(items) < 2)
        for (gen, _, with_image), indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                ids = [prepared[i][0] for i in chunk]
                pixels = [prepared[i][1] for i in chunk] if with_image else None
                sizes = [prepared[i][2] for i in chunk] if with_image else None
                texts = self.assistant.answer(ids, pixels, sizes, gen)
                for i, text in zip(chunk, texts):
                    results[i] = self._finish(text, prepared[i][2], prepared[i][3].get("until"))
                bar.update(len(chunk))
        bar.close()
        return results

    # lmms interface ------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy (or sampled) answers, cut at the request's `until` strings; batched by `batch_size`."""
        items = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            items.append((context, doc_to_visual(self._doc(task, split, doc_id)), dict(gen_kwargs or {})))
        return self._generate_many(items, "comm: generate")

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(log p(continuation | context, image), continuation is the greedy output) per request."""
        results = []
        for req in tqdm(requests, desc="comm: loglikelihood", disable=self.rank != 0):
            context, doc_to_target, doc_to_visual, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            continuation = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
            pixels, size = self._image(doc_to_visual(doc))
            results.append(self.assistant.logprob(context, str(continuation), pixels, size))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Several rounds per request: the task's doc_to_text gives each next context until it says stop."""
        results = []
        for req in tqdm(requests, desc="comm: multi-round", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args
            gen_kwargs = dict(gen_kwargs or {})
            doc = self._doc(task, split, doc_id)
            visuals, outputs, info, round_idx = doc_to_visual(doc), [], None, 0
            while True:
                if round_idx > 0:
                    visuals, context, terminal, previous, info = doc_to_text(
                        doc, previous_output=outputs, round_idx=round_idx, previous_round_info=info
                    )
                    outputs = list(previous)
                    if terminal:
                        break
                outputs.append(self._generate_many([(context, visuals, gen_kwargs)], "comm: round")[0])
                round_idx += 1
            results.append(outputs)
        return results
