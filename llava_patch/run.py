"""Run any LLaVA module as `__main__` with COMM towers: `python -m llava_patch.run llava.serve.cli ARGS`.

`deepspeed --module llava_patch.run llava.train.train ARGS` works too: the launcher's `--local_rank=N`
(inserted before the module name) is moved behind it, where LLaVA's argument parser expects it.
"""

from __future__ import annotations

import logging
import runpy
import sys

from llava_patch.patch import apply

USAGE = "usage: python -m llava_patch.run <llava module, e.g. llava.train.train> [its arguments...]"


def split_argv(argv: list[str]) -> tuple[str, list[str]]:
    """(module, arguments for it) from `argv` (without the program name); launcher flags go behind."""
    launcher_flags = [a for a in argv if a.startswith("--local_rank") or a.startswith("--local-rank")]
    rest = [a for a in argv if a not in launcher_flags]
    if not rest or rest[0].startswith("-"):
        raise SystemExit(f"llava_patch.run: no module to run given\n{USAGE}")
    return rest[0], rest[1:] + launcher_flags


def run_module_patched(module: str, args: list[str]) -> None:
    """Apply the patch, then run `module` as `__main__` with `args` as its command line."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    flavour = apply()
    if flavour.name == "llava-next" and module.startswith("llava.train"):
        from llava_patch.next import repair_trainer_globals

        repair_trainer_globals()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m llava_patch.run`."""
    module, args = split_argv(list(sys.argv[1:] if argv is None else argv))
    run_module_patched(module, args)


if __name__ == "__main__":
    main()
