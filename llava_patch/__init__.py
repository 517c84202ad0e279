"""COMM towers inside an unmodified LLaVA checkout: `llava_patch.apply()`, then `--vision_tower comm`.

Ways to apply it (docs/llava.md compares them): the launchers in `llava_patch.launch`, the runner
`python -m llava_patch.run <llava module> ...`, one `llava_patch.apply()` call in your own code, or the
`.pth` import hook from `python -m llava_patch.pth install` (no code or script change at all).
"""

from llava_patch.flavour import LlavaFlavour, UnsupportedLlavaError, detect_flavour
from llava_patch.patch import apply, is_applied, remove

__all__ = ["LlavaFlavour", "UnsupportedLlavaError", "apply", "detect_flavour", "is_applied", "remove"]
