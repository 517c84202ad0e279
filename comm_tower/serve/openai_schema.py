"""OpenAI chat-completion requests, checked and turned into turns, one image and decoding settings.

Every refusal is an `ApiError`: an HTTP status and OpenAI's error body, whose `param` names the field
(`messages[1].content[0].image_url`) and whose message says what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from comm_tower.constants import DEFAULT_IMAGE_TOKEN
from comm_tower.data.errors import DataError, ImageTooLargeError
from comm_tower.data.images import load_image
from comm_tower.data.templates import Message, TurnOrderError, check_turns
from comm_tower.inference.generation import GenerationConfig
from comm_tower.inference.prompts import user_text
from comm_tower.serve.inputs import ImageInputError, open_image

ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP = 4  # OpenAI's limit on stop strings


@dataclass
class ApiError(Exception):
    """A refused request: HTTP status, a message naming the field and the fix, OpenAI's type and code."""

    status: int
    message: str
    param: str | None = None
    type: str = "invalid_request_error"
    code: str | None = None

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        """OpenAI's error JSON."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ServeLimits:
    """What the server accepts: its model's id, images per conversation, local files, default decoding."""

    model_id: str
    max_images: int = 1
    allow_local_files: bool = False
    defaults: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class ChatRequest:
    """A checked request: the turns (image tag in place), the image, decoding settings, how to answer."""

    turns: list[Message]
    image: Image.Image | None
    gen: GenerationConfig
    stream: bool = False
    include_usage: bool = False


def bad(param: str | None, message: str, status: int = 400, code: str | None = None) -> ApiError:
    """A 400 (or `status`) invalid_request_error naming `param`."""
    return ApiError(status, message, param, code=code)


def parse_chat_request(body: Any, limits: ServeLimits) -> ChatRequest:
    """Check an OpenAI chat-completion body against `limits`; raise ApiError naming the first bad field."""
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object with 'model' and 'messages'")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", f"'model' is missing; this server serves '{limits.model_id}'")
    if model != limits.model_id:
        raise bad(
            "model",
            f"model '{model}' does not exist here; this server serves '{limits.model_id}' (see GET /v1/models)",
            404,
            "model_not_found",
        )
    turns, image = parse_messages(body.get("messages"), limits)
    return ChatRequest(
        turns,
        image,
        generation(body, limits.defaults),
        stream=_flag(body, "stream"),
        include_usage=_include_usage(body),
    )


def parse_messages(messages: Any, limits: ServeLimits) -> tuple[list[Message], Image.Image | None]:
    """The turns (the image tag in front of the text of the turn that brings the image) and the image."""
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "'messages' must be a non-empty list of {role, content} objects")
    turns: list[Message] = []
    images: list[Image.Image] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad(where, f"{where} must be an object with 'role' and 'content'")
        role = msg.get("role")
        role = ROLE_ALIASES.get(role) if isinstance(role, str) else None
        if role is None:
            raise bad(f"{where}.role", f"{where}.role {msg.get('role')!r}: use system, user or assistant")
        text, found = _content(msg.get("content"), f"{where}.content", role, len(images), limits)
        images += found
        turns.append(Message(role, user_text(text, with_image=True) if found else text))
    try:
        check_turns(turns)
    except TurnOrderError as err:
        raise bad(f"messages[{err.turn}].role", f"messages: {err}") from None
    if turns[-1].role != "user":
        last = len(turns) - 1
        raise bad(f"messages[{last}].role", "the last message must be the user's (the question to answer)")
    return turns, images[0] if images else None


def _content(
    content: Any, where: str, role: str, seen: int, limits: ServeLimits
) -> tuple[str, list[Image.Image]]:
    """The text of one message and the images it brings."""
    if isinstance(content, str):
        return _text(content, where), []
    if content is None and role == "assistant":
        return "", []
    if not isinstance(content, list) or not content:
        raise bad(where, f"{where} must be a string or a non-empty list of text and image_url parts")
    texts, images = [], []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad(f"{at}.text", f"{at}.text must be a string")
            texts.append(_text(part["text"], f"{at}.text"))
        elif kind == "image_url":
            if role != "user":
                raise bad(at, f"{at}: images go in user messages, not {role} messages")
            if seen + len(images) >= limits.max_images:
                raise bad(
                    at,
                    f"{at}: this model takes {limits.max_images} image(s) per conversation; "
                    "send the others in separate requests",
                )
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            images.append(open_image_url(url, f"{at}.image_url", limits.allow_local_files))
        else:
            raise bad(f"{at}.type", f"{at}.type {kind!r}: use 'text' or 'image_url'")
    return "\n".join(t for t in texts if t), images


def _text(text: str, where: str) -> str:
    if DEFAULT_IMAGE_TOKEN in text:
        raise bad(where, f"{where} holds the tag '{DEFAULT_IMAGE_TOKEN}'; send images as image_url parts")
    return text


def open_image_url(url: Any, param: str, allow_local_files: bool) -> Image.Image:
    """The image of a `data:` URI (or, when allowed, a `file://` URL); never downloads."""
    if not isinstance(url, str) or not url:
        raise bad(param, f"{param} must hold a 'url' string (a data:image/...;base64,... URI)")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https", "ftp"):
        raise bad(
            param,
            f"{param} is a web URL; comm-serve never downloads: send the image inline as a "
            "data:image/png;base64,... URI",
        )
    if scheme == "file":
        if not allow_local_files:
            raise bad(param, f"{param} is a local file; the server reads files only with --allow-local-files")
        try:
            return open_image(url)
        except ImageInputError as err:
            raise bad(param, f"{param}: {err}") from None
    if scheme != "data":
        raise bad(param, f"{param} must be a data:image/...;base64,... URI")
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise bad(param, f"{param} must be a base64 data URI (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad(param, f"{param}: the data URI is not valid base64") from None
    try:
        return load_image(io.BytesIO(raw), field=param)
    except ImageTooLargeError as err:
        raise bad(param, f"{param}: the image is too large: {' '.join(err.reason.split())}") from None
    except DataError as err:
        reason = " ".join(err.reason.split(";")[0].split())
        raise bad(
            param, f"{param}: the image does not decode ({reason}); send a PNG, JPEG, WebP, BMP or GIF"
        ) from None


def generation(body: dict[str, Any], defaults: GenerationConfig) -> GenerationConfig:
    """Decoding settings of the request over the server's defaults."""
    gen = defaults
    if body.get("n") not in (None, 1):
        raise bad("n", f"n {body['n']!r}: this server returns one choice (n=1)")
    temperature = _number(body, "temperature", 0, 2)
    if temperature is not None:
        gen = replace(gen, temperature=temperature)
    top_p = _number(body, "top_p", 0, 1)
    if top_p is not None:
        if top_p == 0:
            raise bad("top_p", "top_p 0: must be in (0, 1]")
        gen = replace(gen, top_p=top_p)
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise bad(name, f"{name} {value!r}: must be a whole number >= 1 (or left out: all that fits)")
        gen = replace(gen, max_new_tokens=value)
        break
    gen = replace(gen, stop=_stop(body.get("stop")))
    seed = body.get("seed")
    if seed is not None:
        if not _is_int(seed):
            raise bad("seed", f"seed {seed!r}: must be a whole number")
        gen = replace(gen, seed=seed)
    return gen


def _stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise bad("stop", f"stop {stop!r}: a non-empty string or a list of up to {MAX_STOP} of them")
    return tuple(stops)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(name, f"{name} {value!r}: must be a number in [{low}, {high}]")
    if not low <= value <= high:
        raise bad(name, f"{name} {value}: must be in [{low}, {high}]")
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(name, f"{name} {value!r}: must be true or false")
    return value


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise bad("stream_options", 'stream_options must be an object such as {"include_usage": true}')
    return _flag(options, "include_usage")
