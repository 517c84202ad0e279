"""The paper's reported numbers (Jiang et al. 2023, COMM), to print beside ours. Source: comm-method.md."""

from __future__ import annotations

# Main results: COMM-7B and the strongest 7B baseline the paper lists for the benchmark.
MAIN: dict[str, dict[str, float]] = {
    "refcoco_val": {"COMM-7B": 91.73, "Shikra-7B": 87.01},
    "refcoco_testA": {"COMM-7B": 94.06, "Shikra-7B": 90.61},
    "refcoco_testB": {"COMM-7B": 88.85, "Shikra-7B": 80.24},
    "refcoco+_val": {"COMM-7B": 87.21, "Shikra-7B": 81.60},
    "refcoco+_testA": {"COMM-7B": 91.74, "Shikra-7B": 87.36},
    "refcoco+_testB": {"COMM-7B": 81.39, "Shikra-7B": 72.12},
    "refcocog_val": {"COMM-7B": 87.32, "Shikra-7B": 82.27},
    "refcocog_test": {"COMM-7B": 88.33, "Shikra-7B": 82.19},
    "pope_random": {"COMM-7B": 87.29, "Shikra-7B": 86.90},
    "pope_popular": {"COMM-7B": 86.50, "Shikra-7B": 83.97},
    "pope_adversarial": {"COMM-7B": 84.50, "Shikra-7B": 83.10},
    "vqav2": {"COMM-7B": 81.04, "LLaVA-1.5-7B": 80.0},
    "okvqa": {"COMM-7B": 59.18},
    "coco_caption": {"COMM-7B": 132.7, "Shikra-7B": 117.5},
    "flickr30k": {"COMM-7B": 88.2, "Shikra-7B": 73.9},
}

# Controlled analysis: every visual branch trained on the same short schedule (the zoo's presets).
CONTROLLED: dict[str, dict[str, float]] = {
    "clip": {
        "rec_avg": 47.3,
        "pope_avg": 82.3,
        "coco_caption": 125.0,
        "flickr30k": 80.7,
        "mme_cognition": 209.6,
        "mme_perception": 1107.8,
        "vqav2": 68.8,
        "okvqa": 44.2,
    },
    "dinov2": {
        "rec_avg": 54.8,
        "pope_avg": 78.3,
        "coco_caption": 118.0,
        "flickr30k": 68.9,
        "mme_cognition": 261.8,
        "mme_perception": 930.5,
        "vqav2": 63.1,
        "okvqa": 41.9,
    },
    "clip-mfm": {
        "rec_avg": 70.0,
        "pope_avg": 83.4,
        "coco_caption": 125.8,
        "flickr30k": 81.0,
        "mme_cognition": 296.6,
        "mme_perception": 1164.4,
        "vqav2": 69.5,
        "okvqa": 44.7,
    },
    "dinov2-mfm": {
        "rec_avg": 72.8,
        "pope_avg": 83.3,
        "coco_caption": 123.4,
        "flickr30k": 76.3,
        "mme_cognition": 252.9,
        "mme_perception": 1086.8,
        "vqav2": 68.0,
        "okvqa": 42.1,
    },
    "comm": {
        "rec_avg": 72.8,
        "pope_avg": 83.6,
        "coco_caption": 127.3,
        "flickr30k": 81.9,
        "mme_cognition": 360.4,
        "mme_perception": 1234.9,
        "vqav2": 70.1,
        "okvqa": 45.0,
    },
}


def paper_values(benchmark: str, controlled_row: str | None = None) -> dict[str, float]:
    """Reported numbers for one benchmark key: the main table, plus one controlled-analysis row if asked."""
    values = dict(MAIN.get(benchmark, {}))
    if controlled_row is not None:
        if controlled_row not in CONTROLLED:
            known = ", ".join(CONTROLLED)
            raise KeyError(f"unknown controlled-analysis row '{controlled_row}'; known: {known}")
        row = CONTROLLED[controlled_row]
        if benchmark in row:
            values[f"{controlled_row} (controlled)"] = row[benchmark]
    return values
