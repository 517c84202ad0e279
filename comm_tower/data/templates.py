"""Conversation templates: render a chat for generation, or tokenize it so only the answers are learnt.

A template turns a list of `Message`s into text plus the character spans the model must learn; one shared
tokenizer pass maps those spans onto tokens (through the fast tokenizer's offsets), so the masking never
depends on re-tokenizing pieces and counting. `<image>` in the text becomes `IMAGE_TOKEN_INDEX` (one id per
image; the model expands it into the visual tokens).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from comm_tower.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from comm_tower.registry import Registry

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    """One turn of a conversation: role is 'system', 'user' or 'assistant'."""

    role: str
    content: str


@dataclass
class Rendered:
    """Template output: the full text and the character spans [start, end) whose tokens are learnt."""

    text: str
    learnt: list[tuple[int, int]] = field(default_factory=list)


class TurnOrderError(ValueError):
    """Turns out of order; `turn` is the index of the first bad one."""

    def __init__(self, message: str, turn: int) -> None:
        super().__init__(message)
        self.turn = turn


def check_turns(messages: list[Message]) -> None:
    """Raise TurnOrderError unless the turns are: optional system, then user/assistant alternating from user."""
    if not messages:
        raise TurnOrderError("the conversation is empty", 0)
    start = 1 if messages[0].role == "system" else 0
    body = messages[start:]
    if not body:
        raise TurnOrderError("the conversation has a system turn but no user turn", 0)
    for i, msg in enumerate(body):
        if msg.role not in ROLES:
            raise TurnOrderError(
                f"turn {start + i}: unknown role '{msg.role}'; expected one of {ROLES}", start + i
            )
        expected = "user" if i % 2 == 0 else "assistant"
        if msg.role != expected:
            raise TurnOrderError(
                f"turn {start + i}: expected a {expected} turn, got '{msg.role}' "
                "(turns must alternate user, assistant, user, ...)",
                start + i,
            )


def normalize_image_tags(messages: list[Message], num_images: int) -> list[Message]:
    """LLaVA placement: each `<image>` moves to the front of its turn ("<image>\\n" + text).

    Images without a tag get one in front of the first user turn; more tags than images is an error.
    """
    tags = sum(m.content.count(DEFAULT_IMAGE_TOKEN) for m in messages)
    if tags > num_images:
        raise ValueError(f"{tags} '{DEFAULT_IMAGE_TOKEN}' tags but {num_images} image(s)")
    out = []
    missing = num_images - tags
    for msg in messages:
        k = msg.content.count(DEFAULT_IMAGE_TOKEN)
        if missing and msg.role == "user":
            k, missing = k + missing, 0
        if k:
            text = msg.content.replace(DEFAULT_IMAGE_TOKEN, "").strip()
            msg = Message(
                msg.role, (DEFAULT_IMAGE_TOKEN + "\n") * k + text if text else DEFAULT_IMAGE_TOKEN * k
            )
        out.append(msg)
    if missing:
        raise ValueError(f"{num_images} image(s) but no user turn to attach them to")
    return out


def tokenize_with_images(text: str, tokenizer: Any, add_bos: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of `text`; each `<image>` becomes one IMAGE_TOKEN_INDEX."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; the templates need offset mappings. "
            "Fix: load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    if add_bos and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        offsets.append((0, 0))
    pos = 0
    chunks = text.split(DEFAULT_IMAGE_TOKEN)
    for k, chunk in enumerate(chunks):
        if chunk:
            enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            ids.extend(enc["input_ids"])
            offsets.extend((pos + s, pos + e) for s, e in enc["offset_mapping"])
        pos += len(chunk)
        if k < len(chunks) - 1:
            ids.append(IMAGE_TOKEN_INDEX)
            offsets.append((pos, pos + len(DEFAULT_IMAGE_TOKEN)))
            pos += len(DEFAULT_IMAGE_TOKEN)
    return ids, offsets


def labels_from_spans(
    ids: list[int], offsets: list[tuple[int, int]], learnt: list[tuple[int, int]]
) -> list[int]:
    """Copy ids into labels where a token overlaps a learnt span; everything else is IGNORE_INDEX."""
    labels = []
    for tok, (s, e) in zip(ids, offsets):
        keep = tok != IMAGE_TOKEN_INDEX and any(s < b and e > a for a, b in learnt)
        labels.append(tok if keep else IGNORE_INDEX)
    return labels


class ConversationTemplate(ABC):
    """Renders a conversation for generation, or as training text with the answer spans marked."""

    name: ClassVar[str]
    add_bos: ClassVar[bool] = True  # prepend the tokenizer's BOS (chat templates write their own)

    @abstractmethod
    def render_training(self, messages: list[Message], tokenizer: Any) -> Rendered:
        """Full conversation text and the character spans of the answers (what is learnt)."""

    @abstractmethod
    def render_prompt(self, messages: list[Message], tokenizer: Any) -> str:
        """Text that ends where the assistant starts answering (the last turn is the user's)."""

    def encode(self, messages: list[Message], tokenizer: Any) -> tuple[list[int], list[int]]:
        """input_ids and labels for training; only assistant answers carry labels."""
        check_turns(messages)
        rendered = self.render_training(messages, tokenizer)
        ids, offsets = tokenize_with_images(rendered.text, tokenizer, self.add_bos)
        return ids, labels_from_spans(ids, offsets, rendered.learnt)

    def prompt_text(self, messages: list[Message], tokenizer: Any) -> str:
        """Text of the generation prompt (the turns checked; the last must be the user's)."""
        if not messages or messages[-1].role != "user":
            raise ValueError("a generation prompt must end with a user turn")
        check_turns(messages)
        return self.render_prompt(messages, tokenizer)

    def encode_prompt(self, messages: list[Message], tokenizer: Any) -> list[int]:
        """input_ids of the generation prompt (IMAGE_TOKEN_INDEX where images go)."""
        return tokenize_with_images(self.prompt_text(messages, tokenizer), tokenizer, self.add_bos)[0]


TEMPLATES: Registry[type[ConversationTemplate]] = Registry("conversation template")


# LLaVA's `--version` values -> these templates (comm-train's `--version`, comm-convert's `--conv-mode`).
VERSION_TO_TEMPLATE = {
    "plain": "plain",
    "v1": "vicuna_v1",
    "vicuna_v1": "vicuna_v1",
    "chat_template": "chat_template",
}


def get_template(name: str) -> ConversationTemplate:
    """An instance of the template registered as `name` (`plain`, `vicuna_v1`, `chat_template`)."""
    return TEMPLATES.get(name)()


@TEMPLATES.register("plain")
class PlainTemplate(ConversationTemplate):
    """LLaVA stage 1: the image tags, then the caption and "\\n"; only the caption (and "\\n") is learnt.

    The user's words are dropped, as in LLaVA's pretraining: the model learns caption given image.
    """

    name = "plain"
    sep = "\n"

    @staticmethod
    def _image_tags(messages: list[Message]) -> str:
        body = [m for m in messages if m.role != "system"]
        if len(body) != 2:
            raise ValueError(
                f"template 'plain' takes one user turn (the image) and one assistant turn (the caption); "
                f"got {len(body)} turns. Fix: use --version vicuna_v1 or chat_template for dialogues."
            )
        return DEFAULT_IMAGE_TOKEN * body[0].content.count(DEFAULT_IMAGE_TOKEN)

    def render_training(self, messages: list[Message], tokenizer: Any) -> Rendered:
        """Image tags + caption + sep; the caption and sep are learnt."""
        prefix = self._image_tags(messages)
        caption = next(m for m in messages if m.role == "assistant").content
        text = prefix + caption + self.sep
        return Rendered(text, [(len(prefix), len(text))])

    def render_prompt(self, messages: list[Message], tokenizer: Any) -> str:
        """Just the image tags of the (single) user turn."""
        user = [m for m in messages if m.role == "user"]
        return DEFAULT_IMAGE_TOKEN * user[-1].content.count(DEFAULT_IMAGE_TOKEN)


@TEMPLATES.register("vicuna_v1")
class VicunaV1Template(ConversationTemplate):
    """LLaVA-1.5: "<system> USER: q ASSISTANT: a</s>USER: ..."; each answer and its "</s>" are learnt.

    sep2 is the tokenizer's EOS token ("</s>" for Llama/Vicuna), so the model learns to stop.
    """

    name = "vicuna_v1"
    system = (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )
    roles: ClassVar[dict[str, str]] = {"user": "USER", "assistant": "ASSISTANT"}
    sep = " "

    @staticmethod
    def _sep2(tokenizer: Any) -> str:
        return getattr(tokenizer, "eos_token", None) or "</s>"

    def _render(self, messages: list[Message], tokenizer: Any, for_prompt: bool) -> Rendered:
        system = self.system
        if messages and messages[0].role == "system":
            system, messages = messages[0].content, messages[1:]
        sep2 = self._sep2(tokenizer)
        text, learnt = system + self.sep, []
        for msg in messages:
            text += self.roles[msg.role] + ":"
            if msg.role == "assistant":
                # learnt from the space after "ASSISTANT:", as LLaVA does (its "- 2" drops BOS and that space)
                start = len(text)
                text += " " + msg.content + sep2
                learnt.append((start, len(text)))
            else:
                text += " " + msg.content + self.sep
        if for_prompt:
            text += self.roles["assistant"] + ":"
        return Rendered(text, learnt)

    def render_training(self, messages: list[Message], tokenizer: Any) -> Rendered:
        """The whole dialogue, answers (with sep2) marked as learnt."""
        return self._render(messages, tokenizer, for_prompt=False)

    def render_prompt(self, messages: list[Message], tokenizer: Any) -> str:
        """The dialogue so far, ending in "ASSISTANT:"."""
        return self._render(messages, tokenizer, for_prompt=True).text


@TEMPLATES.register("chat_template")
class ChatTemplate(ConversationTemplate):
    """The tokenizer's own `apply_chat_template`; each answer, through its end-of-turn token, is learnt.

    An answer's span is found by rendering the conversation up to that turn with and without the
    generation prompt, so it works with any template that renders earlier turns the same way each time.
    """

    name = "chat_template"
    add_bos = False

    @staticmethod
    def _apply(tokenizer: Any, messages: list[Message], generation: bool) -> str:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"{type(tokenizer).__name__} has no chat_template; fix: pick --version vicuna_v1 or plain, "
                "or set tokenizer.chat_template"
            )
        msgs = [{"role": m.role, "content": m.content} for m in messages]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation)

    def render_training(self, messages: list[Message], tokenizer: Any) -> Rendered:
        """Full rendering; learnt spans are each answer minus trailing whitespace after its end token."""
        full = self._apply(tokenizer, messages, generation=False)
        learnt = []
        for i, msg in enumerate(messages):
            if msg.role != "assistant":
                continue
            prefix = self._apply(tokenizer, messages[:i], generation=True)
            upto = self._apply(tokenizer, messages[: i + 1], generation=False)
            if not (upto.startswith(prefix) and full.startswith(upto)):
                raise ValueError(
                    f"the tokenizer's chat template renders turn {i} differently depending on what follows, "
                    "so its answer cannot be located; fix: use --version vicuna_v1 or a template that "
                    "renders earlier turns unchanged"
                )
            end = len(upto.rstrip())
            if end > len(prefix):
                learnt.append((len(prefix), end))
        return Rendered(full, learnt)

    def render_prompt(self, messages: list[Message], tokenizer: Any) -> str:
        """apply_chat_template(..., add_generation_prompt=True)."""
        return self._apply(tokenizer, messages, generation=True)
