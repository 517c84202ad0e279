"""`comm-presets`: list the zoo's presets, or show one preset's encoders, layers and fusion."""

from __future__ import annotations

import argparse
import json
import sys

from comm_tower.errors import run_command
from comm_tower.fusion.heads import HEADS
from comm_tower.fusion.mfm import FUSIONS
from comm_tower.zoo import list_presets, load_preset, resolve_spec


def _describe(name: str, resolve: bool) -> str:
    spec = load_preset(name)
    lines = [f"{spec.name}: {spec.description}"]
    for enc in spec.encoders:
        align = (
            enc.align.kind if enc.align.kind != "mlp" else f"mlp {enc.align.blocks}x ratio {enc.align.ratio}"
        )
        lines.append(
            f"  {enc.name:8s} {enc.family:10s} layers {enc.layers} fusion {enc.fusion} align {align}"
        )
        lines.append(f"           weights {enc.path}")
    lines.append(f"  branches fused by {spec.branch_fusion}; token grid {spec.token_grid or 'unchanged'}")
    if resolve:
        r = resolve_spec(spec)
        lines.append(f"  tokens {r.num_tokens}, tower channels {r.stacked_width}, image {r.image_size}px")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `comm-presets`: a bad preset stops with one line naming the file and field, exit 2."""
    return run_command("comm-presets", _main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="comm-presets",
        description="List COMM tower presets (zoo/presets/*.json) or describe one. "
        f"MFM variants: {', '.join(FUSIONS.names())}. Projector types: {', '.join(HEADS.names())}.",
    )
    parser.add_argument("name", nargs="?", help="a preset name, a preset .json file, or NAME:ENCODER=/folder")
    parser.add_argument("--resolve", action="store_true", help="read the encoders' configs to report widths")
    parser.add_argument("--json", action="store_true", help="print the (resolved) spec as JSON")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    args = parser.parse_args(argv)
    if args.name is None:
        for name in list_presets():
            print(f"{name:18s} {load_preset(name).description}")
        return 0
    if args.json:
        spec = load_preset(args.name)
        print(json.dumps((resolve_spec(spec) if args.resolve else spec).to_dict(), indent=2))
        return 0
    print(_describe(args.name, args.resolve))
    return 0


if __name__ == "__main__":
    sys.exit(main())
