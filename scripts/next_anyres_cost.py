"""What LLaVA-NeXT's anyres costs per image with the `comm` preset's tower at 336 px, next to a lone CLIP-L/14.

`python scripts/next_anyres_cost.py [--max-crops 9]`: prints one table row per image size and pinpoint grid:
the crops the tower encodes, the visual tokens NeXT splices (anyres_max_N + spatial_unpad), and the tower's
output per image in bf16 (crops x tokens x channels x 2 bytes), which the projector then reads.
The tower's channels come from the preset's layers and the encoders' published widths (no weights needed).
"""

from __future__ import annotations

import argparse

from comm_tower.bench.sizes import PRESET, PRESET_SIZE, shape_of
from comm_tower.zoo import load_preset
from llava_patch.next import anyres_visual_tokens, best_canvas, grid_pinpoints

CROP, PATCH = 336, 14
SIZES = [(336, 336), (672, 672), (1008, 1008), (1344, 448), (1024, 768), (2016, 2016)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-crops", type=int, default=9, help="N of anyres_max_N")
    args = parser.parse_args()
    spec = load_preset(PRESET)
    channels = sum(len(e.layers) * shape_of(e.family, PRESET_SIZE).width for e in spec.encoders)
    clip_channels = shape_of("clip", PRESET_SIZE).width
    side = CROP // PATCH
    print(
        f"tower '{PRESET}': {side}x{side} tokens per {CROP} px crop, {channels} channels per token "
        f"(CLIP-L/14 alone: {clip_channels}); anyres_max_{args.max_crops}, spatial_unpad"
    )
    print(
        "| pinpoints | image (w x h) | crops encoded | visual tokens | COMM tower output, bf16 | CLIP-L output |"
    )
    print("|---|---|---|---|---|---|")
    for pinpoints in ("(1x1),...,(3x3)", "(1x1),...,(6x6)"):
        canvases = grid_pinpoints(pinpoints, CROP)
        for size in SIZES:
            tokens = anyres_visual_tokens(size, canvases, CROP, side, args.max_crops)
            w, h = best_canvas(size, canvases)
            crops = 1 + (w // CROP) * (h // CROP)
            mib = crops * side * side * channels * 2 / 2**20
            clip_mib = crops * side * side * clip_channels * 2 / 2**20
            print(
                f"| {pinpoints} | {size[0]} x {size[1]} | {crops} | {tokens} | {mib:.0f} MiB | {clip_mib:.1f} MiB |"
            )


if __name__ == "__main__":
    main()
