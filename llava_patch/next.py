"""LLaVA-NeXT / OneVision with a COMM tower: the merge types we serve, NeXT's anyres token count, its trainer.

NeXT's `prepare_inputs_labels_for_multimodal` reads `mm_patch_merge_type` by substring at the first forward
pass; `check_merge_type` refuses the values a COMM tower cannot serve when the tower is built instead.
`anyres_visual_tokens` is NeXT's visual-token count for one image, written from its contract (base crop,
crops viewed as `side x side` grids, unpad, `anyres_max_N` cap, one `image_newline` per row).
"""

from __future__ import annotations

import builtins
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from comm_tower.registry import Registry

logger = logging.getLogger(__name__)

FLAG = "--mm_patch_merge_type"
# A merge type we serve: (token grid side) -> None, or why this grid cannot be served and the fix.
MERGE_TYPES: Registry[Callable[[int], str | None]] = Registry("mm_patch_merge_type")


def _any_grid(_: int) -> str | None:
    return None


def _even_grid(side: int) -> str | None:
    if side % 2 == 0:
        return None
    return (
        f"2x2 max pooling of a {side}x{side} token grid drops the last row and column of every crop; set the "
        "preset's `token_grid` to an even number or use spatial_unpad"
    )


for _name in ("flat", "spatial", "spatial_unpad", "spatial_nobase", "spatial_unpad_nobase"):
    MERGE_TYPES.register(_name)(_any_grid)
MERGE_TYPES.register("spatial_maxpool2x2")(_even_grid)


def check_merge_type(cfg: Any, tower_name: str, side: int) -> None:
    """Raise ValueError, naming the flag and the fix, for a merge type this COMM tower cannot serve."""
    merge_type = getattr(cfg, "mm_patch_merge_type", None) or "flat"
    if merge_type not in MERGE_TYPES:
        raise ValueError(
            f"{FLAG} {merge_type}: a COMM tower serves {MERGE_TYPES.names()} (NeXT reads this flag by substring "
            "at the first forward pass: other values fail there or are read as another type); with the COMM tower "
            f"'{tower_name}' use "
            f"{FLAG} spatial_unpad (NeXT's anyres scripts) or flat"
        )
    problem = MERGE_TYPES.get(merge_type)(side)
    if problem:
        raise ValueError(f"{FLAG} {merge_type} with the COMM tower '{tower_name}': {problem}")


def grid_pinpoints(spec: str | list[list[int]], crop: int) -> list[tuple[int, int]]:
    """`"(1x1),...,(3x3)"` (every grid from the first to the last, times the crop) or a list of (w, h) pixels."""
    if isinstance(spec, str):
        ends = re.findall(r"\((\d+)x(\d+)\)", spec)
        if not ends:
            raise ValueError(f"--image_grid_pinpoints {spec!r}: expected '(1x1),...,(3x3)' or [[w, h], ...]")
        (w0, h0), (w1, h1) = (tuple(map(int, end)) for end in (ends[0], ends[-1]))
        return [(w * crop, h * crop) for w in range(w0, w1 + 1) for h in range(h0, h1 + 1)]
    return [(int(w), int(h)) for w, h in spec]


def best_canvas(size: tuple[int, int], canvases: list[tuple[int, int]]) -> tuple[int, int]:
    """The canvas that keeps the most of the image's pixels after an aspect-preserving fit, then wastes least."""

    def score(canvas: tuple[int, int]) -> tuple[int, int]:
        scale = min(canvas[0] / size[0], canvas[1] / size[1])
        kept = min(int(size[0] * scale) * int(size[1] * scale), size[0] * size[1])
        return kept, -(canvas[0] * canvas[1] - kept)

    return max(canvases, key=score)  # max keeps the first of equals, as a strict-improvement scan does


def anyres_visual_tokens(
    size: tuple[int, int], canvases: list[tuple[int, int]], crop: int, side: int, max_crops: int | None
) -> int:
    """Visual tokens NeXT splices for one image of `size` (w, h) under anyres + spatial_unpad.

    Base crop (`side^2`), plus the crops' grid with the letterbox padding cut off, shrunk when it holds more
    than `max_crops` crops' worth of tokens (`anyres_max_N`), plus one `image_newline` per grid row.
    """
    width, height = size
    canvas = best_canvas(size, canvases)
    rows, cols = canvas[1] // crop * side, canvas[0] // crop * side
    if width / height > cols / rows:  # padded top and bottom
        kept = int(height * (cols / width))
        rows -= 2 * ((rows - kept) // 2)
    else:
        kept = int(width * (rows / height))
        cols -= 2 * ((cols - kept) // 2)
    if max_crops is not None:
        times = math.sqrt(rows * cols / (max_crops * side * side))
        if times > 1.1:
            rows, cols = int(rows // times), int(cols // times)
    return side * side + rows * (cols + 1)


def _no_plot(**_: Any) -> None:
    logger.info("llava_patch: LLaVA-NeXT's loss plot is not part of this LLaVA-NeXT snapshot; skipped")


def repair_trainer_globals() -> list[str]:
    """Bind the names NeXT's `LLaVATrainer._inner_training_loop` uses but its module never imports.

    That method is transformers' `Trainer._inner_training_loop` with NeXT's additions; at some NeXT commits
    (the snapshot in shared/third_party among them) the module lacks about 30 of its imports, so `train()`
    stops with a NameError for every tower. Each missing name is taken from `transformers.trainer`, where
    the loop comes from; the one name defined nowhere (`plot_graphs_based_on_log_history`) becomes a logged
    no-op. Returns the names bound.
    """
    import transformers.trainer as hf_trainer
    from llava.train import llava_trainer

    loop = getattr(llava_trainer.LLaVATrainer, "_inner_training_loop", None)
    if loop is None or loop is getattr(hf_trainer.Trainer, "_inner_training_loop", None):
        return []
    namespace = vars(llava_trainer)
    bound = []
    for name in loop.__code__.co_names:
        if name in namespace or hasattr(builtins, name):
            continue
        if hasattr(hf_trainer, name):
            namespace[name] = getattr(hf_trainer, name)
        elif name == "plot_graphs_based_on_log_history":
            namespace[name] = _no_plot
        else:
            continue  # an attribute name, not a global
        bound.append(name)
    if bound:
        logger.info("llava_patch: bound %d names LLaVA-NeXT's trainer uses without importing", len(bound))
    return bound
