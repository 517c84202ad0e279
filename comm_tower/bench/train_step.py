"""A full training step (tower + projector + LLM + backward + AdamW): tokens/s, peak memory, each part's share.

Stage 1 trains the projector only, stage 2 the projector and the LLM (the freezing plans of `comm-train`).
Tokens counted are the LLM's positions after splicing (text + visual tokens).
"""

from __future__ import annotations

import statistics
import time

import torch

from comm_tower.bench.report import Row
from comm_tower.bench.timing import peak_memory_mib
from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.model import CommLlavaForCausalLM
from comm_tower.model.splice import splice_image_features
from comm_tower.train.freeze import apply_plan, plan_for

PHASES = ("tower", "projector", "llm_forward", "backward", "optimizer")


def make_batch(model: CommLlavaForCausalLM, batch: int, text_tokens: int, seed: int = 0) -> dict:
    """`batch` samples on the model's device: one `<image>`, then `text_tokens` random ids, each a label."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.text_config.vocab_size
    ids = torch.randint(3, vocab, (batch, text_tokens + 1), generator=g)
    ids[:, 0] = IMAGE_TOKEN_INDEX
    labels = ids.clone()
    labels[:, 0] = IGNORE_INDEX
    size = model.get_vision_tower().image_size
    images = torch.randn(batch, 3, size, size, generator=g)
    device = model.get_input_embeddings().weight.device
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
        "images": images.to(device=device, dtype=model.dtype),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_in_parts(model: CommLlavaForCausalLM, opt: torch.optim.Optimizer, b: dict) -> dict[str, float]:
    """One step with a clock read between the parts (what `model(**batch)` does, part by part)."""
    device = model.get_input_embeddings().weight.device
    times: dict[str, float] = {}
    _sync(device)
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        _sync(device)
        now = time.perf_counter()
        times[name] = now - t
        t = now

    feats = model.model.vision_tower(b["images"])
    lap("tower")
    proj = model.model.mm_projector(feats)
    lap("projector")
    spliced = splice_image_features(
        b["input_ids"],
        b["attention_mask"],
        b["labels"],
        proj,
        model.get_input_embeddings(),
        padding_side="right",
    )
    loss = model.language_model(
        inputs_embeds=spliced.inputs_embeds,
        attention_mask=spliced.attention_mask,
        position_ids=spliced.position_ids,
        labels=spliced.labels,
    ).loss
    lap("llm_forward")
    loss.backward()
    lap("backward")
    opt.step()
    opt.zero_grad(set_to_none=True)
    lap("optimizer")
    return times


def whole_step(model: CommLlavaForCausalLM, opt: torch.optim.Optimizer, b: dict) -> float:
    """One step through the model's own forward; seconds."""
    device = model.get_input_embeddings().weight.device
    _sync(device)
    t = time.perf_counter()
    model(**b).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - t


def run(
    model: CommLlavaForCausalLM, size: str, batch: int, repeats: int, text_tokens: int = 64, stage: int = 2
) -> list[Row]:
    """Interleave the part-by-part step and the model's own step; report each part's share and tokens/s."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 (projector) or 2 (projector + LLM), got {stage}")
    apply_plan(model, plan_for(stage == 1, False, False, False))
    model.train()
    b = make_batch(model, batch, text_tokens)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    step_in_parts(model, opt, b)  # warm-up; creates the optimizer state
    parts: list[dict[str, float]] = []
    whole: list[float] = []
    for r in range(repeats):
        if r % 2 == 0:
            parts.append(step_in_parts(model, opt, b))
            whole.append(whole_step(model, opt, b))
        else:
            whole.append(whole_step(model, opt, b))
            parts.append(step_in_parts(model, opt, b))
    peak = peak_memory_mib(lambda: whole_step(model, opt, b), model.get_input_embeddings().weight.device)
    med = {p: statistics.median(x[p] for x in parts) for p in PHASES}
    total = sum(med.values())
    whole_med = statistics.median(whole)
    tokens = batch * (text_tokens + model.get_vision_tower().num_patches)
    rows = [
        Row(
            bench="train_step",
            size=size,
            name=f"part:{p}",
            batch=batch,
            median_s=med[p],
            spread=_spread([x[p] for x in parts]),
            extra={"share": med[p] / total, "seconds": [x[p] for x in parts]},
        )
        for p in PHASES
    ]
    rows.append(
        Row(
            bench="train_step",
            size=size,
            name="whole_step",
            batch=batch,
            median_s=whole_med,
            spread=_spread(whole),
            throughput=batch / whole_med,
            unit="img/s",
            peak_mib=peak,
            vs="sum_of_parts",
            ratio=whole_med / total,
            extra={
                "stage": stage,
                "tokens_per_sample": tokens // batch,
                "tokens_per_step": tokens,
                "tokens_per_s": tokens / whole_med,
                "trainable_params": sum(p.numel() for p in params),
                "shares": {p: med[p] / total for p in PHASES},
                "seconds": whole,
            },
        )
    )
    return rows


def _spread(xs: list[float]) -> float:
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m else 0.0
