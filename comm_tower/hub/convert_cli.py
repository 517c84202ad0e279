"""`comm-convert`: a LLaVA checkpoint trained with a COMM tower through llava_patch -> a comm_llava checkpoint."""

from __future__ import annotations

import argparse
import logging

from comm_tower.errors import DEBUG_FLAG, run_command

DESCRIPTION = """\
Convert a LLaVA checkpoint trained with a COMM vision tower (LLaVA's train() with --vision_tower comm,
through llava_patch) into a comm_llava checkpoint that comm-chat, comm-eval, comm-serve and
transformers' from_pretrained load without LLaVA, with the logits of LLaVA's own load_pretrained_model
on the original (up to how transformers 4.37 and 5 interpolate DINOv2's position embeddings; see
docs/llava.md).

Accepted: a full fine-tune (LLaVA's --output_dir with config.json and model weights), a LoRA run
(adapter files + non_lora_trainables.bin; needs --model-base) or a stage-1 run (mm_projector.bin;
needs --model-base). The tower's encoders are read from the folders recorded in config.json
(mm_comm); set COMM_ENCODER_PATHS=name=/dir,... if they moved. The output is written to a temporary
folder beside OUT and renamed to OUT at the end: a failed conversion leaves nothing behind.
"""


def build_parser() -> argparse.ArgumentParser:
    """The comm-convert command line."""
    p = argparse.ArgumentParser(
        prog="comm-convert", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("llava_path", help="LLaVA output folder (full fine-tune, LoRA or stage 1)")
    p.add_argument("out", help="new comm_llava checkpoint folder (must not exist)")
    p.add_argument(
        "--model-base",
        default=None,
        help="the LLM a LoRA or stage-1 run was trained on (LLaVA's --model_name_or_path)",
    )
    p.add_argument(
        "--conv-mode",
        default="v1",
        help="the conversation format it was trained with, LLaVA's --version: v1 (default; LLaVA-1.5's "
        "vicuna_v1), plain (stage 1), vicuna_v1 or chat_template; recorded in the checkpoint, where "
        "comm-chat and comm-eval read it",
    )
    p.add_argument(
        "--system-prompt",
        default=None,
        help="system prompt to record (default: the template's own, as LLaVA's v1 uses)",
    )
    p.add_argument(DEBUG_FLAG, action="store_true", help="print the traceback of an error")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from comm_tower.hub.convert import convert_llava_checkpoint  # torch and transformers: not for --help

    out = convert_llava_checkpoint(
        args.llava_path, args.out, args.model_base, args.conv_mode, args.system_prompt
    )
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `comm-convert`."""
    return run_command("comm-convert", _main, argv)


if __name__ == "__main__":
    main()
