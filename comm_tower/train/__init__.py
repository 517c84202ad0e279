"""Training: LLaVA-flag CLI, HF Trainer subclass, per-stage freezing, LoRA on the LLM only."""
