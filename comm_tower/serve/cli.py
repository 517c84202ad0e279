"""`comm-chat` / `python -m comm_tower.serve.cli`: talk to a COMM model in the terminal, answers streamed.

    comm-chat --model-path ckpt/comm-7b --image-file view.jpg --load-4bit

Type a message and press Enter; Ctrl-D, `exit` or `quit` ends the chat. `/image PATH` switches to another
image (a new conversation), `/reset` forgets the turns so far. Images are local files (a path or a
`file://` URL); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from comm_tower.inference.flags import (
    add_generation_arguments,
    add_model_arguments,
    check_generation_arguments,
    generation_config,
)

EXIT_WORDS = ("exit", "quit")

if TYPE_CHECKING:
    from comm_tower.inference.assistant import Assistant
    from comm_tower.inference.chat import ChatSession


def build_parser() -> argparse.ArgumentParser:
    """LLaVA's `llava.serve.cli` flags, plus --dtype, --system-prompt and --top-p."""
    p = argparse.ArgumentParser(prog="comm-chat", description=__doc__.split("\n")[0])
    add_model_arguments(p)
    p.add_argument("--image-file", default=None, help="local image path or file:// URL (optional)")
    add_generation_arguments(p)
    p.add_argument(
        "--debug", action="store_true", help="log the prompt and library messages; print an error's traceback"
    )
    return p


def setup_logging(debug: bool, prog: str = "comm-chat") -> None:
    """Warnings from us; library chatter (per-call bitsandbytes notes) only with --debug."""
    logging.basicConfig(
        format=f"{prog}: %(levelname)s %(name)s: %(message)s",
        level=logging.DEBUG if debug else logging.WARNING,
    )
    if not debug:
        for name in ("bitsandbytes", "transformers", "peft"):
            logging.getLogger(name).setLevel(logging.ERROR)
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def default_device() -> str:
    """cuda when a GPU is visible, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    """`comm-chat`: bad flags, images or checkpoints stop with one line and exit code 2."""
    from comm_tower.errors import run_command

    return run_command("comm-chat", _main, argv)


def _main(argv: list[str] | None) -> int:
    """Parse flags, check the image, load the model, then chat until Ctrl-D / exit."""
    from comm_tower.errors import UsageError

    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    from comm_tower.serve.inputs import open_image

    # the image before the (slow) model load: a bad path fails fast
    image = open_image(args.image_file) if args.image_file else None
    bad = check_generation_arguments(args)
    if bad:
        raise UsageError(bad)
    session = open_session(args)
    session.set_image(image)
    return chat_loop(session)


def load_assistant(args: argparse.Namespace) -> Assistant:
    """The model the flags name, in its recorded chat format (comm-chat, comm-web and comm-serve)."""
    from comm_tower.inference.assistant import Assistant

    return Assistant.load(
        args.model_path,
        args.model_base,
        conv_mode=args.conv_mode,
        system_prompt=args.system_prompt,
        load_4bit=args.load_4bit,
        load_8bit=args.load_8bit,
        device=args.device or default_device(),
        dtype=args.dtype,
    )


def open_session(args: argparse.Namespace) -> ChatSession:
    """Load the model the flags name and wrap it in a chat session (shared by comm-chat and comm-web)."""
    from comm_tower.inference.chat import ChatSession

    return ChatSession(load_assistant(args), generation_config(args))


def chat_loop(session: object) -> int:
    """Read a line, stream the answer; Ctrl-D / exit / quit / Ctrl-C end with exit code 0."""
    from comm_tower.serve.inputs import ImageInputError, open_image

    while True:
        try:
            text = input("USER: ")
        except (EOFError, KeyboardInterrupt):
            print(flush=True)
            return 0
        text = text.strip()
        if not text:
            continue
        if text.lower() in EXIT_WORDS:
            return 0
        if text == "/reset":
            session.reset()
            print("(conversation cleared)", flush=True)
            continue
        if text.startswith("/image"):
            try:
                session.set_image(open_image(text.removeprefix("/image").strip()))
                print("(new image; new conversation)", flush=True)
            except ImageInputError as err:
                print(f"comm-chat: error: {err}", file=sys.stderr, flush=True)
            continue
        print("ASSISTANT: ", end="", flush=True)
        try:
            for piece in session.ask(text):
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            print("\n(interrupted)", flush=True)
            return 0
        except (RuntimeError, ValueError) as err:
            print(file=sys.stderr)
            print(f"comm-chat: error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
            continue
        print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
