"""Text about a synthetic scene: stage-1 captions and stage-2 questions (POPE, REC, attribute, counting).

Existence questions follow POPE: every image gets one question about an object that is there ("Yes") and
one about an object that is not ("No"), the absent one chosen by a strategy:
- `random`: any absent (colour, shape) category;
- `popular`: the absent category seen most often in the training scenes;
- `adversarial`: an absent category that shares its colour or its shape with an object in the image
  (the synthetic stand-in for POPE's frequently co-occurring objects).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from comm_tower.demo.scenes import Scene, SceneObject, SceneSpec, format_box, normalised_box

# LLaVA appends "Answer the question using a single word or phrase." to short-answer questions; the demo
# leaves it out: ten tokens per question cost a CPU run more than they teach a model trained from scratch.
SHORT_ANSWER = ""
POPE_STRATEGIES: tuple[str, ...] = ("random", "popular", "adversarial")
CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the image briefly.",
    "What is in the picture?",
    "Give a short description of the image.",
    "List the shapes in the image.",
)
_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class QA:
    """One question about an image with its reference answer; `category`/`subset` drive the metrics."""

    question: str
    answer: str
    category: str  # pope | rec | attribute | count
    subset: str  # pope: strategy; attribute: colour|shape|size; count: all|colour|shape; rec: box
    bbox_px: tuple[int, int, int, int] | None = None  # rec: the target's box in pixels (x2, y2 exclusive)
    about: tuple[str, str] | None = None  # pope: the (colour, shape) category asked about


def plural(shape: str) -> str:
    """'circle' -> 'circles'."""
    return shape + "s"


CAPTION_ORDERS: tuple[str, ...] = ("reading", "category")


def caption(spec: SceneSpec, scene: Scene, with_boxes: bool = False, order: str = "reading") -> str:
    """'Two objects: a large red circle and a small blue square.' (optionally with boxes).

    `order="reading"` lists the objects top-left to bottom-right; `order="category"` by colour, then shape,
    in the spec's order, so that saying the next object means finding out which categories are present and
    its box means finding the object by its colour and shape (what existence questions need).
    """
    if order == "reading":
        objs = scene.reading_order()
    elif order == "category":
        rank = {cat: k for k, cat in enumerate(spec.categories)}
        objs = sorted(scene.objects, key=lambda o: rank[o.category])
    else:
        raise ValueError(f"unknown caption order '{order}'; known: {', '.join(CAPTION_ORDERS)}")
    parts = []
    for o in objs:
        text = f"a {o.phrase()}"
        if with_boxes:
            text += " " + format_box(normalised_box(spec, o))
        parts.append(text)
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    n = len(objs)
    head = _NUMBER_WORDS[n].capitalize() if n < len(_NUMBER_WORDS) else str(n)
    return f"{head} object{'s' if n != 1 else ''}: {listed}."


def category_frequencies(scenes: list[Scene]) -> Counter:
    """How many scenes contain each (colour, shape) category."""
    counts: Counter = Counter()
    for scene in scenes:
        counts.update({o.category for o in scene.objects})
    return counts


def popular_order(spec: SceneSpec, frequencies: Counter) -> list[tuple[str, str]]:
    """Categories from most to least frequent (ties by the spec's order)."""
    order = {cat: k for k, cat in enumerate(spec.categories)}
    return sorted(spec.categories, key=lambda cat: (-frequencies.get(cat, 0), order[cat]))


def _short(question: str) -> str:
    """A short-answer question with the (optional) instruction appended."""
    return f"{question} {SHORT_ANSWER}" if SHORT_ANSWER else question


def _existence_q(colour: str, shape: str) -> str:
    return _short(f"Is there a {colour} {shape} in the image?")


def existence_pair(
    spec: SceneSpec,
    scene: Scene,
    rng: random.Random,
    strategy: str,
    popular: list[tuple[str, str]],
    asked: frozenset[tuple[str, str]] = frozenset(),
) -> list[QA]:
    """One 'Yes' and one 'No' existence question, the negative drawn with `strategy`.

    Categories in `asked` are not asked about again; with no present category left, no pair (`[]`).
    """
    present = {o.category for o in scene.objects}
    absent = [cat for cat in spec.categories if cat not in present and cat not in asked]
    if strategy == "random":
        neg = rng.choice(absent)
    elif strategy == "popular":
        neg = next(cat for cat in popular if cat in absent)
    elif strategy == "adversarial":
        close = [cat for cat in absent if any(cat[0] == p[0] or cat[1] == p[1] for p in present)]
        neg = rng.choice(close or absent)
    else:
        raise ValueError(f"unknown POPE strategy '{strategy}'; known: {', '.join(POPE_STRATEGIES)}")
    positives = [o.category for o in scene.objects if o.category not in asked]
    if not positives:
        return []
    pos = rng.choice(positives)
    return [
        QA(_existence_q(*pos), "Yes", "pope", strategy, about=pos),
        QA(_existence_q(*neg), "No", "pope", strategy, about=neg),
    ]


def rec_question(spec: SceneSpec, obj: SceneObject) -> QA:
    """Referring expression -> box, e.g. 'Give the bounding box of the small red circle.'."""
    return QA(
        f"Give the bounding box of the {obj.phrase()}.",
        format_box(normalised_box(spec, obj)),
        "rec",
        "box",
        obj.box_px,
    )


def attribute_question(spec: SceneSpec, obj: SceneObject, kind: str) -> QA:
    """Colour, shape or size of the object at a box given in the question."""
    where = format_box(normalised_box(spec, obj))
    if kind == "colour":
        return QA(_short(f"What colour is the object at {where}?"), obj.colour, "attribute", kind)
    if kind == "shape":
        return QA(_short(f"What shape is the object at {where}?"), obj.shape, "attribute", kind)
    if kind == "size":
        return QA(_short(f"Is the object at {where} small or large?"), obj.size, "attribute", kind)
    raise ValueError(f"unknown attribute kind '{kind}'; known: colour, shape, size")


def count_question(spec: SceneSpec, scene: Scene, rng: random.Random) -> QA:
    """How many objects / objects of a colour / shapes of a kind (answer as digits)."""
    kind = rng.choice(("all", "colour", "shape"))
    if kind == "all":
        q, n = "How many objects are there in the image?", len(scene.objects)
    elif kind == "colour":
        colour = rng.choice(spec.colours)
        q, n = f"How many {colour} objects are there?", sum(o.colour == colour for o in scene.objects)
    else:
        shape = rng.choice(spec.shapes)
        q, n = f"How many {plural(shape)} are there?", sum(o.shape == shape for o in scene.objects)
    return QA(_short(q), str(n), "count", kind)


def scene_questions(
    spec: SceneSpec,
    scene: Scene,
    rng: random.Random,
    strategy: str | list[str],
    popular: list[tuple[str, str]],
) -> list[QA]:
    """The set for one image: an existence pair per strategy, one REC, one attribute and one count question."""
    items: list[QA] = []
    asked: set[tuple[str, str]] = set()
    for name in [strategy] if isinstance(strategy, str) else strategy:
        # no category is asked about twice (in one conversation the model could copy the earlier answer
        # instead of reading the image); a pair is dropped whole, so yes and no stay balanced
        pair = existence_pair(spec, scene, rng, name, popular, frozenset(asked))
        asked |= {qa.about for qa in pair if qa.about}
        items += pair
    items.append(rec_question(spec, rng.choice(scene.objects)))
    items.append(attribute_question(spec, rng.choice(scene.objects), rng.choice(("colour", "shape", "size"))))
    items.append(count_question(spec, scene, rng))
    return items
