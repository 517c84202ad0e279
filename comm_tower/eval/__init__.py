"""Evaluation: benchmark metrics, the `comm-eval` runner, the lmms-eval plugin and the layer probe."""
