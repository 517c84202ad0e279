"""Evaluation tasks: which metric scores a question file, with which options, and which paper number it meets.

A task either names one metric for every sample, or routes samples to metrics by their `category` field
(question files that mix kinds, like the demo's). `headline` lists the scores printed in the table, each
paired with the paper's benchmark key (see `paper_numbers.py`) or None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comm_tower.registry import Registry


@dataclass(frozen=True)
class Task:
    """How to score one benchmark's answers."""

    metric: str | None = None  # one metric for all samples; None -> route by category
    by_category: dict[str, str] = field(default_factory=dict)  # category -> metric
    split_field: str | None = None  # also score each value of this field separately (e.g. POPE subset)
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments for the metric
    headline: tuple[tuple[str, str | None], ...] = ()  # (score name, paper benchmark key)


TASKS: Registry[Task] = Registry("eval task")

for _split in ("random", "popular", "adversarial"):
    TASKS.register(f"pope_{_split}")(
        Task("pope", headline=(("accuracy", f"pope_{_split}"), ("f1", None), ("yes_ratio", None)))
    )
TASKS.register("pope")(
    Task(
        "pope", split_field="category", headline=(("accuracy", "pope_avg"), ("f1", None), ("yes_ratio", None))
    )
)
for _data, _splits in (("refcoco", ("val", "testA", "testB")), ("refcoco+", ("val", "testA", "testB"))):
    for _split in _splits:
        TASKS.register(f"{_data}_{_split}")(Task("rec", headline=(("accuracy", f"{_data}_{_split}"),)))
for _split in ("val", "test"):
    TASKS.register(f"refcocog_{_split}")(Task("rec", headline=(("accuracy", f"refcocog_{_split}"),)))
TASKS.register("rec")(Task("rec", headline=(("accuracy", "rec_avg"), ("mean_iou", None))))
TASKS.register("vqav2")(Task("vqav2", headline=(("accuracy", "vqav2"),)))
TASKS.register("okvqa")(Task("vqav2", headline=(("accuracy", "okvqa"),)))
TASKS.register("coco_caption")(Task("caption", headline=(("cider", "coco_caption"),)))
TASKS.register("flickr30k")(Task("caption", headline=(("cider", "flickr30k"),)))
TASKS.register("reg")(Task("reg", headline=(("cider", None),)))
TASKS.register("mme")(
    Task("mme", headline=(("perception", "mme_perception"), ("cognition", "mme_cognition")))
)
TASKS.register("demo")(
    Task(
        by_category={"pope": "pope", "rec": "rec", "attribute": "vqav2", "count": "vqav2"},
        split_field="subset",
        headline=(
            ("pope/accuracy", "pope_avg"),
            ("rec/accuracy", "rec_avg"),
            ("attribute/accuracy", None),
            ("count/accuracy", None),
        ),
    )
)
