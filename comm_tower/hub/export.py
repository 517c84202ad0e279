"""`comm-export`: a comm_llava checkpoint as a Hugging Face-native folder: weights, processor, code, card.

    comm-export ckpt/comm-7b hf/comm-7b

The output loads with transformers alone (`trust_remote_code=True`: the package's modelling, configuration and
processing code is written into it, with `auto_map` in config.json and processor_config.json), with comm_tower
installed (no remote code needed), through `AutoModelForImageTextToText`, `AutoProcessor` and
`pipeline("image-text-to-text")`. Its README.md is a model card read from the checkpoint, its run
(trainer_state.json) and comm-eval scores found beside it. The folder is written under a temporary name and
renamed when complete, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from comm_tower.errors import run_command

logger = logging.getLogger(__name__)
README = "README.md"


class ExportError(ValueError):
    """The folder given cannot be exported (one line: which input, why, the fix)."""


def save_pretrained(
    model: Any,
    processor: Any,
    out: str | os.PathLike,
    remote_code: bool = True,
    card: str | None = None,
) -> Path:
    """Save model and processor into `out`; with `remote_code`, also the code and `auto_map` for trust_remote_code."""
    from comm_tower.hub.remote_code import generate

    out = Path(out)
    model.save_pretrained(out)
    code = generate() if remote_code else None
    processor.save_pretrained(
        out, auto_map={"AutoProcessor": code.auto_map["AutoProcessor"]} if code else None
    )
    if code is not None:
        code.write(out)
        config_path = out / "config.json"
        config = json.loads(config_path.read_text())
        config["auto_map"] = code.auto_map
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if card is not None:
        (out / README).write_text(card)
    return out


def check_exportable(checkpoint: Path) -> Any:
    """The checkpoint's config, after checking it is a full comm_llava checkpoint whose tower can be rebuilt."""
    from comm_tower.builders import spec_of
    from comm_tower.inference.checkpoints import CheckpointKind, checkpoint_kind, model_type
    from comm_tower.model.configuration import MODEL_TYPE, CommLlavaConfig

    if not checkpoint.is_dir():
        raise ExportError(f"{checkpoint} is not a folder; give a comm-train output folder")
    found = model_type(str(checkpoint))
    if found != MODEL_TYPE:
        what = "no readable config.json" if found is None else f"model_type {found!r} in config.json"
        raise ExportError(
            f"{checkpoint} is not a comm_llava checkpoint ({what}); give a comm-train output folder "
            "(a LLaVA checkpoint trained through llava_patch is converted with comm-convert first)"
        )
    kind = checkpoint_kind(str(checkpoint))
    if kind is not CheckpointKind.FULL:
        raise ExportError(
            f"{checkpoint} holds a {kind.value} checkpoint, not every weight; load it with --model-base and "
            "save it whole (comm_tower.load_pretrained_model, then model.save_pretrained) before exporting"
        )
    config = CommLlavaConfig.from_pretrained(checkpoint)
    if not config.mm_encoder_configs:
        # the tower's structure is not recorded: it comes from the encoder folders, which must be there
        spec = spec_of(config)
        missing = [f"{e.name}: {e.path}" for e in spec.encoders if not Path(e.path).is_dir()] if spec else []
        if missing:
            raise ExportError(
                f"{checkpoint}/config.json records no mm_encoder_configs, so the tower is rebuilt from its "
                f"encoder folders, and these are missing: {'; '.join(missing)}. Fix: set "
                "COMM_ENCODER_PATHS='NAME=/folder,...' to where the encoders are now"
            )
    return config


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    remote_code: bool = True,
    eval_files: list[Path] | None = None,
    repo_id: str | None = None,
) -> Path:
    """Export `checkpoint` into the new folder `out` (see the module docstring); returns `out`."""
    from comm_tower.hub.card import found_eval_files, read_eval_scores, render_card
    from comm_tower.inference.generation import pad_token_id
    from comm_tower.inference.loading import load_pretrained_model
    from comm_tower.inference.processing import CommProcessor

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists():
        raise ExportError(f"{out} already exists; give a new folder (nothing was written)")
    config = check_exportable(checkpoint)
    dtype = str(getattr(config, "dtype", None) or "float32").removeprefix("torch.")
    tokenizer, model, _, _ = load_pretrained_model(str(checkpoint), device="cpu", dtype=dtype)
    processor = CommProcessor.from_config(model.config, tokenizer)
    # transformers' own generate path stops and pads as comm-chat does
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = pad_token_id(tokenizer)
    scores = read_eval_scores([*found_eval_files(checkpoint), *(eval_files or [])])
    card = render_card(model.config, checkpoint, scores, repo_id or out.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        save_pretrained(model, processor, tmp, remote_code=remote_code, card=card)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported %s to %s", checkpoint, out)
    return out


def build_parser() -> argparse.ArgumentParser:
    """comm-export's flags."""
    p = argparse.ArgumentParser(
        prog="comm-export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Exit status 2 with one line naming the input on bad input: a folder that is not a full comm_llava "
            "checkpoint, or encoder folders that are missing (set COMM_ENCODER_PATHS='NAME=/folder,...')."
        ),
    )
    p.add_argument("checkpoint", help="a full comm_llava checkpoint folder (comm-train's output)")
    p.add_argument("out", help="the folder to create (must not exist yet)")
    p.add_argument(
        "--no-remote-code",
        action="store_true",
        help="do not write the code files and auto_map (the folder then needs comm_tower to load)",
    )
    p.add_argument(
        "--eval-results",
        nargs="*",
        default=[],
        type=Path,
        help="comm-eval --scores-file JSONs for the card (eval/*.json and *scores*.json beside the checkpoint "
        "are found without this)",
    )
    p.add_argument(
        "--repo-id", default=None, help="the name the card's loading examples use (default: OUT's name)"
    )
    p.add_argument("--debug", action="store_true", help="log progress; print an error's traceback")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        format="comm-export: %(message)s", level=logging.INFO if args.debug else logging.WARNING
    )
    out = export_checkpoint(
        args.checkpoint, args.out, not args.no_remote_code, list(args.eval_results), args.repo_id
    )
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    return run_command("comm-export", _main, argv)


if __name__ == "__main__":
    main()
