"""A small web demo (`pip install 'comm-tower[web]'`): upload an image, chat, answers streamed.

    python -m comm_tower.serve.gradio_app --model-path ckpt/comm-7b --load-4bit [--port 7860]

Listens on 127.0.0.1 only unless --host says otherwise; never downloads anything.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Iterator
from typing import Any

from comm_tower.inference.chat import ChatSession
from comm_tower.inference.flags import check_generation_arguments
from comm_tower.serve.inputs import ImageInputError, open_image

logger = logging.getLogger(__name__)


class WebChat:
    """The demo's logic, free of gradio: one shared ChatSession, one answer at a time."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.image_path: str | None = None
        self.lock = threading.Lock()

    def respond(
        self, message: str, image_path: str | None, history: list[dict[str, str]]
    ) -> Iterator[list[dict[str, str]]]:
        """Stream the chat history with the growing answer (OpenAI-style message dicts, as gradio wants)."""
        message = (message or "").strip()
        if not message:
            yield history
            return
        with self.lock:
            if image_path != self.image_path:
                try:
                    self.session.set_image(open_image(image_path) if image_path else None)
                except ImageInputError as err:
                    yield [
                        *history,
                        {"role": "user", "content": message},
                        {"role": "assistant", "content": str(err)},
                    ]
                    return
                self.image_path = image_path
                history = []  # a new image starts a new conversation
            if not history:
                self.session.reset()
            turns = [*history, {"role": "user", "content": message}]
            answer = ""
            for piece in self.session.ask(message):
                answer += piece
                yield [*turns, {"role": "assistant", "content": answer}]

    def clear(self) -> tuple[list, str]:
        """Forget the conversation (the image stays)."""
        with self.lock:
            self.session.reset()
        return [], ""


def _messages_format(gr: Any) -> dict[str, str]:
    """gradio 4/5 need type='messages' for role/content dicts; gradio 6 only has that format."""
    import inspect

    return {"type": "messages"} if "type" in inspect.signature(gr.Chatbot.__init__).parameters else {}


def build_demo(web: WebChat, title: str = "COMM chat") -> Any:
    """The gradio Blocks UI around `web`."""
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError(f"the web demo needs gradio: pip install 'comm-tower[web]' ({err})") from err
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}")
        with gr.Row():
            image = gr.Image(type="filepath", label="Image", sources=["upload"])
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Conversation", **_messages_format(gr))
                box = gr.Textbox(placeholder="Ask about the image, then Enter", show_label=False)
                clear = gr.Button("Clear")
        box.submit(web.respond, [box, image, chatbot], chatbot).then(lambda: "", None, box)
        clear.click(web.clear, None, [chatbot, box])
    return demo


def main(argv: list[str] | None = None) -> int:
    """`comm-web`: bad flags or checkpoints stop with one line and exit code 2."""
    from comm_tower.errors import run_command

    return run_command("comm-web", _main, argv)


def _main(argv: list[str] | None) -> None:
    """Load the model with comm-chat's flags and serve the demo."""
    from comm_tower.serve.cli import build_parser, open_session, setup_logging

    parser = argparse.ArgumentParser(parents=[build_parser()], add_help=False, prog="comm-web")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    bad = check_generation_arguments(args)
    if bad:
        parser.error(bad)
    session = open_session(args)
    build_demo(WebChat(session)).queue().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
