"""Hugging Face-native checkpoints: export with remote code, model cards, conversion from LLaVA layout."""
