"""`comm-demo` / `python -m comm_tower.demo`: the whole COMM pipeline on CPU with tiny models, in minutes.

comm-demo                 # tiny-comm: data -> stage 1 -> stage 2 -> held-out table -> chat
comm-demo --compare       # the same for clip, clip-mfm, dinov2-mfm and comm, one table
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from comm_tower.demo.questions import CAPTION_ORDERS
from comm_tower.demo.runner import PRESETS, DemoConfig, run_demo


def build_parser() -> argparse.ArgumentParser:
    """Options of comm-demo."""
    d = DemoConfig()
    p = argparse.ArgumentParser(prog="comm-demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=d.out, help="output folder (data, checkpoints, table, plot)")
    p.add_argument("--preset", default="comm", choices=sorted(PRESETS), help="vision tower of a single run")
    p.add_argument("--compare", action="store_true", help="run clip, clip-mfm, dinov2-mfm and comm")
    p.add_argument("--steps", type=int, default=d.stage2.steps, help="stage-2 steps")
    p.add_argument("--stage1-steps", type=int, default=d.stage1.steps)
    p.add_argument("--batch-size", type=int, default=d.stage2.batch_size)
    p.add_argument("--lr", type=float, default=d.stage2.lr, help="stage-2 learning rate")
    p.add_argument("--train", type=int, default=d.n_train, help="training images")
    p.add_argument("--test", type=int, default=d.n_test, help="held-out images (5 questions each)")
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N questions")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--recipe",
        default=d.recipe,
        choices=["comm", "llava"],
        help="comm: LLM + projector train in both stages (paper); llava: stage 1 trains the projector only",
    )
    p.add_argument("--stage1-lr", type=float, default=d.stage1.lr)
    p.add_argument(
        "--turns", type=int, default=d.turns, help="questions per stage-2 conversation (9: all of an image's)"
    )
    p.add_argument(
        "--caption-order",
        default=d.caption_order,
        choices=CAPTION_ORDERS,
        help="order of the objects in stage-1 captions (category: by colour, then shape)",
    )
    p.add_argument(
        "--system",
        default=d.system,
        help="system prompt of the stage-2 data, recorded in the checkpoint for evaluation and chat; "
        "'default' keeps vicuna_v1's own",
    )
    p.add_argument(
        "--llm-init-std",
        type=float,
        default=d.llm.init_std,
        help="standard deviation of the tiny LLM's random weights (Llama's own: 0.02, which learns far slower)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="where the tiny LLM is cached")
    p.add_argument(
        "--score-every",
        type=int,
        default=None,
        metavar="N",
        help="also save a stage-2 checkpoint every N steps and score each on the held-out split afterwards, "
        "with its blind baseline: a learning curve (mid-schedule checkpoints understate a shorter run)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """DemoConfig from parsed options."""
    d = DemoConfig()
    if min(args.steps, args.stage1_steps, args.batch_size, args.train, args.test, args.turns) < 1:
        raise SystemExit(
            "comm-demo: --steps, --stage1-steps, --batch-size, --train, --test and --turns must be >= 1"
        )
    if not 0 < args.llm_init_std < 1:
        raise SystemExit(f"comm-demo: --llm-init-std must lie in (0, 1), got {args.llm_init_std}")
    if args.score_every is not None and not 1 <= args.score_every <= args.steps:
        raise SystemExit(
            f"comm-demo: --score-every must lie in [1, --steps ({args.steps})], got {args.score_every}"
        )
    return DemoConfig(
        out=args.out,
        seed=args.seed,
        n_train=args.train,
        n_test=args.test,
        stage1=dataclasses.replace(
            d.stage1, steps=args.stage1_steps, batch_size=args.batch_size, lr=args.stage1_lr
        ),
        recipe=args.recipe,
        stage2=dataclasses.replace(d.stage2, steps=args.steps, batch_size=args.batch_size, lr=args.lr),
        llm=dataclasses.replace(d.llm, init_std=args.llm_init_std),
        eval_limit=args.eval_limit,
        cache_dir=args.cache_dir,
        turns=args.turns,
        caption_order=args.caption_order,
        system=None if args.system == "default" else args.system,
        score_every=args.score_every,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of comm-demo."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    presets = ["clip", "clip-mfm", "dinov2-mfm", "comm"] if args.compare else [args.preset]
    run_demo(config_from_args(args), presets)


if __name__ == "__main__":
    main()
