"""Prompts in the chat format a checkpoint was trained with: its conversation template and system prompt.

`comm-train` records both in the saved config (`conv_template`, `system_prompt`); every reader builds its
prompts through `ChatFormat`, which takes them from there unless a flag overrides them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from comm_tower.constants import DEFAULT_IMAGE_TOKEN
from comm_tower.data.templates import TEMPLATES, Message, get_template

logger = logging.getLogger(__name__)
DEFAULT_TEMPLATE = "vicuna_v1"  # what a checkpoint that records nothing was trained with (LLaVA-1.5's v1)
TEMPLATE_SYSTEM = "default"  # --system-prompt value that asks for the template's own system prompt


def user_text(question: str, with_image: bool) -> str:
    """LLaVA's placement: the image tag, a newline, then the question."""
    if not with_image or DEFAULT_IMAGE_TOKEN in question:
        return question
    return f"{DEFAULT_IMAGE_TOKEN}\n{question}"


@dataclass(frozen=True)
class ChatFormat:
    """A conversation template and the system prompt that opens every conversation (None: the template's)."""

    template: str = DEFAULT_TEMPLATE
    system: str | None = None

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(
                f"conversation template '{self.template}' is not known; use one of {', '.join(TEMPLATES)}"
            )

    @classmethod
    def of(cls, config: Any, conv_mode: str | None = None, system_prompt: str | None = None) -> ChatFormat:
        """The format recorded in `config`, each part replaced by its flag when given.

        `system_prompt="default"` asks for the template's own system prompt whatever the checkpoint records.
        """
        template = conv_mode or getattr(config, "conv_template", None) or DEFAULT_TEMPLATE
        system = system_prompt if system_prompt is not None else getattr(config, "system_prompt", None)
        return cls(template, None if system == TEMPLATE_SYSTEM else system)

    @property
    def keeps_history(self) -> bool:
        """Whether earlier turns belong in the prompt ('plain', stage 1, only captions one image)."""
        return self.template != "plain"

    def messages(self, turns: Sequence[Message]) -> list[Message]:
        """`turns` opened by the system prompt (unless they bring their own)."""
        if self.system is None or (turns and turns[0].role == "system"):
            return list(turns)
        return [Message("system", self.system), *turns]

    def prompt_ids(self, turns: Sequence[Message], tokenizer: Any) -> list[int]:
        """Token ids of the generation prompt for `turns` (ending with the user's), -200 where images go."""
        template, messages = get_template(self.template), self.messages(turns)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("prompt: %r", template.render_prompt(messages, tokenizer))
        return template.encode_prompt(messages, tokenizer)

    def prompt_text(self, turns: Sequence[Message], tokenizer: Any) -> str:
        """Text of the generation prompt for `turns`, `<image>` tags where images go (what `prompt_ids` tokenizes)."""
        return get_template(self.template).prompt_text(self.messages(turns), tokenizer)

    def question_ids(self, question: str, tokenizer: Any, with_image: bool) -> list[int]:
        """Token ids of a one-question prompt (the image, if any, in front of the question)."""
        return self.prompt_ids([Message("user", user_text(question, with_image))], tokenizer)

    def describe(self) -> str:
        """One line for logs: template and system prompt."""
        system = "the template's own" if self.system is None else repr(self.system)
        return f"template {self.template}, system prompt {system}"
