"""Drop-in replacements for LLaVA's entry points, each applying the COMM patch first.

| LLaVA | COMM-enabled |
|---|---|
| `deepspeed llava/train/train_mem.py ARGS` | `deepspeed llava_patch/launch/train_mem.py ARGS` |
| `python llava/train/train.py ARGS` | `python -m llava_patch.launch.train ARGS` |
| `python -m llava.serve.cli ARGS` | `python -m llava_patch.launch.cli ARGS` |
| `python -m llava.serve.model_worker ARGS` | `python -m llava_patch.launch.model_worker ARGS` |
"""
