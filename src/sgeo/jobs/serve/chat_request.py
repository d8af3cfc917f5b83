"""OpenAI chat-completion requests -> what the engine needs: the one image, earlier turns, the question, settings.

Everything a client can get wrong is an `ApiError` with an HTTP status and a one-line message. Images come
from data URLs, or from local paths and file:// URLs inside the server's image root; remote URLs are never
fetched.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes, urlsplit
from urllib.request import url2pathname

from PIL import Image

from ...errors import SgeoError, one_line
from ...inference.options import MAX_NEW_TOKENS, MAX_TEMPERATURE, TEMPERATURE
from ...model.conversation import clean_text
from ...pipeline.images import DEFAULT_MAX_PIXELS, decode_image, read_file, resolve_inside
from .defaults import MAX_IMAGE_MB, MAX_REQUEST_MB, MIB


class ApiError(Exception):
    """A request the server refuses: HTTP `status`, OpenAI-style error `type`, one-line `message`."""

    def __init__(
        self, status: int, message: str, type: str = "invalid_request_error", headers: dict | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.type = status, one_line(message), type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type}}


@dataclass
class Limits:
    """What the server allows and assumes: the image root, defaults and caps of the sampling settings."""

    image_root: Path | None = None
    temperature: float = TEMPERATURE
    max_tokens: int = MAX_NEW_TOKENS
    max_tokens_limit: int = 2048
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = int(MAX_REQUEST_MB * MIB)  # a local image may be as large as a request body
    # What one image may cost once decoded (PIL's buffer; a JPEG over it is decoded at a reduced scale): a
    # 200 KB 16-bit PNG can declare 89 million pixels, which is gigabytes of work, not 200 KB.
    max_decoded_bytes: int = int(MAX_IMAGE_MB * MIB)
    # How many images decode at once: requests decode before they queue for the model, so without a bound
    # N clients would hold N decoded images at the same time.
    decode_slots: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(2))


@dataclass
class ChatRequest:
    image: Image.Image
    history: list[tuple[str, str]]  # earlier (question, answer) pairs
    question: str
    temperature: float
    max_tokens: int
    stream: bool
    seed: int | None = None  # sampling's seed: the same request and seed give the same answer
    system: str | None = None  # replaces the template's system prompt
    stop: tuple[str, ...] = ()  # strings that end the answer


def parse_chat_request(body: bytes, limits: Limits) -> ChatRequest:
    """Validate a `/v1/chat/completions` body and load its image; unknown fields are ignored, as OpenAI's are."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"malformed JSON body: {error}") from None
    except RecursionError:  # json's parser recurses once per level of nesting
        raise ApiError(400, "malformed JSON body: nested too deeply") from None
    if not isinstance(request, dict):
        raise ApiError(400, "the body must be a JSON object with a 'messages' list")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects")
    system, first = None, 0
    if isinstance(messages[0], dict) and messages[0].get("role") == "system":
        system, first = _system_text(messages[0]), 1
    if (len(messages) - first) % 2 == 0:
        raise ApiError(400, "the last message must be from the user: it holds the question to answer")
    if request.get("n") not in (None, 1):
        raise ApiError(400, "only n=1 is supported: one choice per request")
    texts, image_urls = [], []
    for i, message in enumerate(messages[first:], start=first):
        text, urls = _read_message(i, message, first)
        texts.append(text)
        image_urls += urls
    if not image_urls:
        raise ApiError(
            400,
            "no image: this model answers questions about an image; add a content part "
            '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}} to a user message',
        )
    if len(image_urls) > 1:
        raise ApiError(400, f"{len(image_urls)} images given; the model takes one image per conversation")
    questions, answers = texts[0::2], texts[1::2]
    tokens_key = "max_tokens" if "max_tokens" in request else "max_completion_tokens"  # the newer name
    if not all(questions):
        raise ApiError(400, "a user message has no text: ask a question")
    return ChatRequest(
        image=load_image_url(image_urls[0], limits),
        history=list(zip(questions[:-1], answers, strict=True)),
        question=questions[-1],
        temperature=_number(request, "temperature", limits.temperature, 0.0, MAX_TEMPERATURE),
        max_tokens=int(
            _number(request, tokens_key, limits.max_tokens, 1, limits.max_tokens_limit, integer=True)
        ),
        stream=_flag(request, "stream"),
        seed=_seed(request),
        stop=_stop(request.get("stop")),
        system=system,
    )


def _system_text(message: dict) -> str:
    """The text of a system message (which replaces the template's system prompt): a string or text parts."""
    content = message.get("content")
    parts = [content] if isinstance(content, str) else content if isinstance(content, list) else None
    texts = [p if isinstance(p, str) else p.get("text") if isinstance(p, dict) and p.get("type") == "text" else None
             for p in parts or [None]]  # fmt: skip
    if not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "messages[0], the system message, must hold text only (a string or text parts)")
    return "\n".join(texts)


def _read_message(i: int, message, first: int = 0) -> tuple[str, list[str]]:
    """(text, image urls) of message `i`; after the system message (if any: `first` is 1) roles alternate
    user, assistant, ..., user."""
    if not isinstance(message, dict):
        raise ApiError(400, f"messages[{i}] must be an object with 'role' and 'content'")
    role, content = message.get("role"), message.get("content")
    expected = "user" if (i - first) % 2 == 0 else "assistant"
    if role == "system":
        raise ApiError(400, f"messages[{i}] is a system message: only the first message may be one")
    if role != expected:
        raise ApiError(
            400, f"messages[{i}] has role {role!r}, expected {expected!r}: roles alternate user, assistant, "
            "..., and the last message is from the user",
        )  # fmt: skip
    if isinstance(content, str):
        return clean_text(content), []
    if not isinstance(content, list):
        raise ApiError(400, f"messages[{i}].content must be a string or a list of content parts")
    texts, urls = [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            if role != "user":
                raise ApiError(400, f"messages[{i}] is from the assistant and cannot hold an image")
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if not isinstance(url, str) or not url:
                raise ApiError(400, f'messages[{i}].content[{j}] needs "image_url": {{"url": "..."}}')
            urls.append(url)
        else:
            raise ApiError(
                400, f"messages[{i}].content[{j}] must be {{'type': 'text', 'text': ...}} or "
                "{'type': 'image_url', 'image_url': {'url': ...}}",
            )  # fmt: skip
    return clean_text("\n".join(texts)), urls


def _number(request: dict, key: str, default: float, low: float, high: float, integer: bool = False) -> float:
    value = request.get(key)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (integer and value != int(value)) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise ApiError(400, f"'{key}' must be {what} from {low:g} to {high:g}, got {value!r}")
    return value


def _seed(request: dict) -> int | None:
    if request.get("seed") is None:
        return None
    return int(_number(request, "seed", 0, 0, 2**63 - 1, integer=True))


def _stop(value) -> tuple[str, ...]:
    """OpenAI's `stop`: null, a string, or a list of up to 4 non-empty strings."""
    stop = [value] if isinstance(value, str) else [] if value is None else value
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of up to 4 non-empty strings")
    return tuple(stop)


def _flag(request: dict, key: str) -> bool:
    value = request.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"'{key}' must be true or false, got {value!r}")
    return value


def load_image_url(url: str, limits: Limits) -> Image.Image:
    """A data URL, or a local path / file:// URL inside `limits.image_root`, decoded to RGB."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "data":
        return decode_for_serving(_data_url_bytes(url), limits, "the data URL")
    if scheme in ("", "file"):
        return _load_local(url, scheme, limits)
    raise ApiError(
        400, f"image URLs with scheme {scheme!r} are not fetched; send the image as a data URL "
        "(data:image/png;base64,...) or as a path inside the server's --image-root",
    )  # fmt: skip


def _data_url_bytes(url: str) -> bytes:
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise ApiError(400, "malformed data URL: no ',' between the media type and the data")
    media_type, *params = header.split(";")
    media_type = media_type.strip().lower()
    if not media_type.startswith("image/"):
        raise ApiError(
            400,
            f"the data URL holds {media_type or 'text/plain'!r}, not an image (image/png, image/jpeg, ...)",
        )
    if "base64" not in (p.strip().lower() for p in params):
        return unquote_to_bytes(payload)
    try:
        return base64.b64decode(unquote(payload), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(400, f"the data URL's base64 data is invalid: {error}") from None


def _load_local(url: str, scheme: str, limits: Limits) -> Image.Image:
    if limits.image_root is None:
        raise ApiError(
            400, "local image paths are refused: the server was started without --image-root; "
            "send the image as a data URL",
        )  # fmt: skip
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ApiError(400, f"file:// URLs must name a local file, not one on host {parts.netloc!r}")
        path = url2pathname(parts.path)
    else:
        path = url
    try:
        target = resolve_inside(limits.image_root, path)
    except SgeoError:
        raise ApiError(
            403, f"image path {path!r} is outside the server's image root", type="permission_error"
        ) from None
    try:
        # a regular file only: a fifo would block the request (and its thread) until someone wrote to it
        data = read_file(target, max_bytes=limits.max_file_bytes, name=f"image {path!r}")
    except SgeoError as error:
        raise ApiError(400, f"{error} (in the server's image root)") from None
    return decode_for_serving(data, limits, f"image {path!r}")


def decode_for_serving(data: bytes, limits: Limits, what: str) -> Image.Image:
    """Decode an image a client sent, within the server's per-image budget and its number of decode slots."""
    try:
        with limits.decode_slots:
            return decode_image(
                data, max_pixels=limits.max_pixels, max_decoded_bytes=limits.max_decoded_bytes
            )
    except SgeoError as error:
        raise ApiError(400, f"{what} is not a usable image: {error}") from None
