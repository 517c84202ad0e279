"""Trainable fusion: multi-level feature merging (MFM), branch alignment, the COMM projector and heads."""
