"""End-to-end demo: synthetic visual-grounding data, tiny models, both training stages, evaluation, chat."""
