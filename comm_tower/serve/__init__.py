"""Inference: load a trained COMM model (full, projector-only or LoRA; fp32/fp16/8-bit/4-bit) and chat with it."""
