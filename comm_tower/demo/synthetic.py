"""Synthetic visual-grounding data set for the demo, deterministic from a seed.

`python -m comm_tower.demo.synthetic --out DIR --seed 0 --train 2000 --test 150` writes, under DIR:
- `images/train/*.png`, `images/test/*.png` (held-out scenes never drawn in training);
- `stage1.json`: LLaVA pretraining format, one caption conversation per training image;
- `stage2.json`: LLaVA instruction format, POPE-style existence, REC, attribute and counting turns;
- `test.jsonl`: LLaVA `model_vqa` question file `{question_id, image, text, answer, category, subset}`
  (REC questions also carry `bbox` in pixels, `width`, `height`);
- `meta.json`: the generation parameters, category frequencies and every scene's objects and boxes.
Image paths in the JSON files are relative to DIR (LLaVA's `--image_folder DIR`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
from pathlib import Path

from tqdm import tqdm

from comm_tower.demo.questions import (
    CAPTION_ORDERS,
    CAPTION_PROMPTS,
    POPE_STRATEGIES,
    QA,
    caption,
    category_frequencies,
    popular_order,
    scene_questions,
)
from comm_tower.demo.scenes import Scene, SceneSpec, normalised_box, render_scene, sample_scene

logger = logging.getLogger(__name__)
FORMAT_VERSION = 2
MAX_REDRAWS = 1000


def _rng(seed: int, *parts: object) -> random.Random:
    """Independent, reproducible stream per (seed, split, index, purpose) (string seeds hash with SHA-512)."""
    return random.Random("-".join(str(p) for p in (seed, *parts)))


def sample_splits(spec: SceneSpec, seed: int, n_train: int, n_test: int) -> tuple[list[Scene], list[Scene]]:
    """Training scenes, then held-out scenes redrawn until none matches a training (or earlier test) scene."""
    train = [sample_scene(spec, _rng(seed, "train", i)) for i in range(n_train)]
    seen = {s.signature for s in train}
    test = []
    for i in range(n_test):
        for attempt in range(MAX_REDRAWS):
            scene = sample_scene(spec, _rng(seed, "test", i, attempt))
            if scene.signature not in seen:
                break
        else:
            raise RuntimeError(
                f"test scene {i}: no unseen layout after {MAX_REDRAWS} draws; use fewer --train images "
                "or a larger grid / more objects per image"
            )
        seen.add(scene.signature)
        test.append(scene)
    return train, test


def _turns(items: list[QA], first_image: bool) -> list[dict]:
    """LLaVA conversation turns for `items`, `<image>` in front of the first question."""
    conv = []
    for k, qa in enumerate(items):
        value = f"<image>\n{qa.question}" if first_image and k == 0 else qa.question
        conv += [{"from": "human", "value": value}, {"from": "gpt", "value": qa.answer}]
    return conv


def _scene_record(spec: SceneSpec, scene: Scene, image: str) -> dict:
    objs = [
        {
            "colour": o.colour,
            "shape": o.shape,
            "size": o.size,
            "row": o.row,
            "col": o.col,
            "box_px": list(o.box_px),
            "box": normalised_box(spec, o),
        }
        for o in scene.objects
    ]
    return {"image": image, "objects": objs}


def _params(
    spec: SceneSpec,
    seed: int,
    n_train: int,
    n_test: int,
    turns: int,
    caption_boxes: bool,
    pope_pairs: int,
    caption_order: str,
    system: str | None,
) -> dict:
    return {
        "caption_order": caption_order,
        "system": system,
        "pope_pairs": pope_pairs,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "train": n_train,
        "test": n_test,
        "turns_per_sample": turns,
        "caption_boxes": caption_boxes,
        "spec": dataclasses.asdict(spec),
    }


def generate_dataset(
    out: Path,
    seed: int = 0,
    n_train: int = 2000,
    n_test: int = 150,
    spec: SceneSpec | None = None,
    turns: int = 1,
    caption_boxes: bool = False,
    pope_pairs: int = 1,
    force: bool = False,
    progress: bool = True,
    caption_order: str = "reading",
    system: str | None = None,
) -> dict[str, Path]:
    """Write the data set to `out` (skipped if `out/meta.json` has the same parameters); return its files.

    `turns` questions of an image share one stage-2 conversation; `system`, if given, opens every stage-2
    conversation as a system turn (replacing the template's system prompt); `caption_order` is
    `caption`'s `order`.
    """
    if caption_order not in CAPTION_ORDERS:
        raise ValueError(f"caption_order must be one of {CAPTION_ORDERS}, got {caption_order!r}")
    if n_train < 1 or n_test < 1 or turns < 1:
        raise ValueError(f"need --train >= 1, --test >= 1, --turns >= 1 (got {n_train}, {n_test}, {turns})")
    if not 1 <= pope_pairs <= len(POPE_STRATEGIES):
        raise ValueError(
            f"--pope-pairs must be 1..{len(POPE_STRATEGIES)} (one per strategy), got {pope_pairs}"
        )
    spec = spec or SceneSpec()
    out = Path(out)
    files = {name: out / name for name in ("stage1.json", "stage2.json", "test.jsonl", "meta.json")}
    params = _params(spec, seed, n_train, n_test, turns, caption_boxes, pope_pairs, caption_order, system)
    if (
        not force
        and all(p.exists() for p in files.values())
        and json.loads(files["meta.json"].read_text()).get("params") == params
    ):
        logger.info("synthetic data in %s is up to date", out)
        return files
    train, test = sample_splits(spec, seed, n_train, n_test)
    freq = category_frequencies(train)
    popular = popular_order(spec, freq)
    for split in ("train", "test"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)

    stage1, stage2, questions, records = [], [], [], {"train": [], "test": []}
    head = [{"from": "system", "value": system}] if system is not None else []  # opens each stage-2 sample
    for split, scenes in (("train", train), ("test", test)):
        for i, scene in enumerate(tqdm(scenes, desc=f"render {split}", disable=not progress, leave=False)):
            image = f"images/{split}/{i:06d}.png"
            render_scene(spec, scene).save(out / image, format="PNG")
            records[split].append(_scene_record(spec, scene, image))
            rng = _rng(seed, split, i, "text")
            if split == "train":
                prompt = rng.choice(CAPTION_PROMPTS)
                stage1.append(
                    {
                        "id": f"train-{i:06d}",
                        "image": image,
                        "conversations": [
                            {"from": "human", "value": f"<image>\n{prompt}"},
                            {"from": "gpt", "value": caption(spec, scene, caption_boxes, caption_order)},
                        ],
                    }
                )
                strategies = rng.sample(POPE_STRATEGIES, pope_pairs)
                items = scene_questions(spec, scene, rng, strategies, popular)
                rng.shuffle(items)
                for k in range(0, len(items), turns):
                    stage2.append(
                        {
                            "id": f"train-{i:06d}-{k // turns}",
                            "image": image,
                            "conversations": head + _turns(items[k : k + turns], first_image=True),
                        }
                    )
            else:
                # each held-out image gets one POPE strategy in turn, so every strategy is exactly balanced
                strategy = POPE_STRATEGIES[i % len(POPE_STRATEGIES)]
                for qa in scene_questions(spec, scene, rng, strategy, popular):
                    q = {
                        "question_id": len(questions),
                        "image": image,
                        "text": qa.question,
                        "answer": qa.answer,
                        "category": qa.category,
                        "subset": qa.subset,
                    }
                    if qa.bbox_px is not None:  # what the REC metric scores against
                        q.update(bbox=list(qa.bbox_px), width=spec.image_size, height=spec.image_size)
                    questions.append(q)

    files["stage1.json"].write_text(json.dumps(stage1, indent=1))
    files["stage2.json"].write_text(json.dumps(stage2, indent=1))
    files["test.jsonl"].write_text("".join(json.dumps(q) + "\n" for q in questions))
    meta = {
        "params": params,
        "category_frequencies": {f"{c} {s}": freq.get((c, s), 0) for c, s in spec.categories},
        "popular_order": [f"{c} {s}" for c, s in popular],
        "scenes": records,
    }
    files["meta.json"].write_text(json.dumps(meta, indent=1))
    logger.info(
        "wrote %d training images (%d stage-2 samples) and %d held-out images (%d questions) to %s",
        n_train,
        len(stage2),
        n_test,
        len(questions),
        out,
    )
    return files


def main(argv: list[str] | None = None) -> None:
    """Command line: generate the synthetic demo data set."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=2000, help="training images")
    p.add_argument("--test", type=int, default=150, help="held-out images (5 questions each)")
    p.add_argument("--image-size", type=int, default=SceneSpec.image_size)
    p.add_argument("--grid", type=int, default=SceneSpec.grid, help="layout cells per side")
    p.add_argument("--max-objects", type=int, default=SceneSpec.max_objects)
    p.add_argument("--jitter", type=int, default=SceneSpec.jitter, help="random object shift in pixels")
    p.add_argument("--turns", type=int, default=1, help="questions per stage-2 conversation")
    p.add_argument("--caption-boxes", action="store_true", help="put each object's box in stage-1 captions")
    p.add_argument("--pope-pairs", type=int, default=1, help="yes/no pairs per training image (1-3)")
    p.add_argument(
        "--caption-order",
        choices=CAPTION_ORDERS,
        default="reading",
        help="order of the objects in stage-1 captions: reading (top-left first) or category (by colour, shape)",
    )
    p.add_argument(
        "--system",
        default=None,
        help="system prompt opening every stage-2 conversation (default: the template's)",
    )
    p.add_argument("--force", action="store_true", help="regenerate even if DIR is up to date")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec = SceneSpec(
            image_size=args.image_size, grid=args.grid, max_objects=args.max_objects, jitter=args.jitter
        )
    except ValueError as e:
        p.error(str(e))
    generate_dataset(
        args.out,
        args.seed,
        args.train,
        args.test,
        spec,
        args.turns,
        args.caption_boxes,
        pope_pairs=args.pope_pairs,
        force=args.force,
        caption_order=args.caption_order,
        system=args.system,
    )


if __name__ == "__main__":
    main()
