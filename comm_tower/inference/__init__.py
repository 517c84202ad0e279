"""Inference: the one way to ask a COMM model: load a checkpoint, build the prompt, generate, stream."""
