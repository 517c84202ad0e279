"""Benchmark metrics, each registered in `METRICS` under the name a task refers to."""

from comm_tower.eval.metrics import cider, mme, pope, rec, vqav2
from comm_tower.eval.metrics.base import METRICS, Metric, Sample, Scores

__all__ = ["METRICS", "Metric", "Sample", "Scores", "cider", "mme", "pope", "rec", "vqav2"]
