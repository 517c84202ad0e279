"""Splice visual tokens into a text batch: each `IMAGE_TOKEN_INDEX` (-200) id becomes N image-feature rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from comm_tower.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


@dataclass
class SplicedBatch:
    """What the LLM receives after splicing: embeddings, mask, position ids and labels (or None)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None


def assign_images(input_ids: torch.Tensor, attention_mask: torch.Tensor, num_images: int) -> list[list[int]]:
    """Which image (row of the feature tensor) each sample's `<image>` slots use, in order.

    Two layouts are accepted: one image per `<image>` id across the batch, in reading order; or LLaVA's
    one image per sample (text-only samples carry a dummy image that is encoded but not spliced).
    """
    counts = [
        int(((ids == IMAGE_TOKEN_INDEX) & mask.bool()).sum()) for ids, mask in zip(input_ids, attention_mask)
    ]
    total = sum(counts)
    if total == num_images:
        out, start = [], 0
        for c in counts:
            out.append(list(range(start, start + c)))
            start += c
        return out
    if num_images == len(counts) and all(c <= 1 for c in counts):
        return [[i] if c == 1 else [] for i, c in enumerate(counts)]
    raise ValueError(
        f"the batch has {total} <image> tokens (per sample: {counts}) but {num_images} images were given; "
        "pass one image per <image> token, or one image per sample with at most one <image> token each"
    )


def splice_image_features(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    image_features: torch.Tensor | None,
    embed_tokens: torch.nn.Module,
    max_length: int | None = None,
    padding_side: str = "right",
) -> SplicedBatch:
    """Replace every -200 id with its image's N feature rows; labels there become IGNORE_INDEX; pad the batch.

    `image_features` is `[num_images, N, D]` in the embedding dtype. Features that no `<image>` id uses still
    join the graph with weight 0, so every rank runs the projector (ZeRO-3 gathers stay in step).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    num_images = 0 if image_features is None else image_features.shape[0]
    slots = assign_images(input_ids, attention_mask, num_images)
    text_ids = input_ids.clamp(min=0)  # -200 (and any other negative) must not index the embedding table
    text_embeds = embed_tokens(text_ids)
    used: set[int] = set()
    rows, row_labels = [], []
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b].bool()
        ids, emb = input_ids[b][keep], text_embeds[b][keep]
        lab = labels[b][keep] if labels is not None else None
        image_pos = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        pieces, lab_pieces, start = [], [], 0
        for pos, img in zip(image_pos, slots[b]):
            pieces += [emb[start:pos], image_features[img]]
            if lab is not None:
                ignore = torch.full(
                    (image_features.shape[1],), IGNORE_INDEX, dtype=lab.dtype, device=lab.device
                )
                lab_pieces += [lab[start:pos], ignore]
            used.add(img)
            start = pos + 1
        pieces.append(emb[start:])
        rows.append(torch.cat(pieces))
        if lab is not None:
            lab_pieces.append(lab[start:])
            row_labels.append(torch.cat(lab_pieces))
    if max_length is not None:
        rows = [r[:max_length] for r in rows]
        row_labels = [r[:max_length] for r in row_labels]
    if image_features is not None and len(used) < num_images:
        rows[0] = rows[0] + 0.0 * image_features.sum()
    return _pad(rows, row_labels if labels is not None else None, padding_side)


def _pad(rows: list[torch.Tensor], row_labels: list[torch.Tensor] | None, side: str) -> SplicedBatch:
    """Stack variable-length rows with zero embeddings, mask 0 and IGNORE_INDEX labels in the padding."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    width = max(r.shape[0] for r in rows)
    dim, dev, dtype = rows[0].shape[1], rows[0].device, rows[0].dtype
    embeds = torch.zeros(len(rows), width, dim, dtype=dtype, device=dev)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
    pos = torch.zeros(len(rows), width, dtype=torch.long, device=dev)
    labels = (
        None
        if row_labels is None
        else torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long, device=dev)
    )
    for b, r in enumerate(rows):
        n = r.shape[0]
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        embeds[b, cols] = r
        mask[b, cols] = 1
        pos[b, cols] = torch.arange(n, device=dev)
        if labels is not None:
            labels[b, cols] = row_labels[b]
    return SplicedBatch(embeds, mask, pos, labels)
