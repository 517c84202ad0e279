"""The results table: our headline scores beside the paper's numbers."""

from __future__ import annotations

from comm_tower.eval.metrics import Scores
from comm_tower.eval.paper_numbers import paper_values
from comm_tower.eval.tasks import Task


def results_table(
    task_name: str, task: Task, scores: Scores, controlled_row: str | None = None, all_scores: bool = False
) -> str:
    """A plain-text table: task, score name, ours, then each reported number for that benchmark."""
    rows = []
    headline = task.headline or tuple((k, None) for k in scores if k != "count")
    if all_scores:
        shown = {name for name, _ in headline}
        headline = (*headline, *((k, None) for k in scores if k not in shown))
    for name, paper_key in headline:
        if name not in scores:
            continue
        paper = paper_values(paper_key, controlled_row) if paper_key else {}
        reported = "  ".join(f"{who} {value:.2f}" for who, value in paper.items()) or "-"
        rows.append((task_name, name, f"{scores[name]:.2f}", reported))
    header = ("task", "score", "ours", "paper")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
