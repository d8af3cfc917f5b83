"""A client of any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, `sgeo serve`), with the standard
library only: the API base a URL names (`api_base`), the key header (`auth_headers`), a `Prompt` as chat
messages with its images as data URLs (`messages_for`, `data_url`), and `Client`, which POSTs
`<base>/chat/completions` and retries what a busy or restarting server answers.

A 429 or 5xx answer, or a dropped connection, is retried with exponential backoff, honouring `Retry-After`;
a refusal of the item (400, 413, 422: an image too large, too many images) raises `Refused` with the
endpoint's reason; one of the whole run (401, 403, 404) or retries spent raise `Fatal`. The key comes from
OPENAI_API_KEY (sent as `Authorization: Bearer`; none is sent without it, as local servers want none).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from ..errors import SgeoError, one_line

MAX_RETRIES = 6  # retries of one request on 429 / 5xx / a dropped connection, then the run stops
BACKOFF_S = 1.0  # first wait; doubled each retry (with jitter), unless the server says Retry-After
MAX_WAIT_S = 120.0  # the longest single wait, even when Retry-After asks for more
TIMEOUT_S = 600.0  # one request (a long answer of a slow model)
FATAL = {401: "set OPENAI_API_KEY to the endpoint's key", 403: "check OPENAI_API_KEY's permissions",
         404: "check --endpoint (the API base, e.g. http://host:8000/v1) and the model name"}  # fmt: skip
_PASSED_AS_IS = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


@dataclass(frozen=True)
class RemoteModel:
    name: str  # the model name the endpoint knows
    base: str  # the API base, ".../v1"

    @property
    def identity(self) -> str:
        """What answers.jsonl records as `model`: a resumed run must ask the same model at the same endpoint."""
        return f"{PREFIX}{self.name}@{self.base}"


PREFIX = "openai:"  # `--model openai:NAME`: the model NAME behind an endpoint


def api_base(url: str, option: str) -> str:
    """The API base of `url` (given as `option`, named in the refusal of a URL that is not http(s)): ".../v1"
    as given; a ".../chat/completions" URL loses that tail; a bare host:port gets "/v1", which vLLM,
    llama.cpp and `sgeo serve` all answer under."""
    given, url = url, url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SgeoError(f"{option} {given!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000/v1")
    if url.endswith("/chat/completions"):
        return url[: -len("/chat/completions")]
    return url if parts.path else url + "/v1"


def auth_headers() -> dict[str, str]:
    """A JSON request's headers, with the key from OPENAI_API_KEY where set (hosted endpoints want one; local
    servers none)."""
    headers = {"Content-Type": "application/json"}
    if key := os.environ.get("OPENAI_API_KEY"):
        headers["Authorization"] = f"Bearer {key}"
    return headers


def data_url(raw: bytes, picture=None) -> str:
    """An image as a data URL: the file's own bytes when they are PNG, JPEG or GIF (what every endpoint
    decodes), else `picture` (the decoded image, tiled or upscaled as the protocol says) as PNG."""
    mime = next((m for magic, m in _PASSED_AS_IS.items() if raw.startswith(magic)), None)
    if mime is None or picture is not None:
        from PIL import Image

        if picture is None:
            picture = Image.open(io.BytesIO(raw))
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="PNG")
        raw, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def messages_for(prompt, urls: list[str]) -> list[dict[str, Any]]:
    """The chat messages of a `Prompt`: its system prompt (if any), then the human turn as content parts,
    each "<image>" replaced by the next image's URL (images the turn does not mark go first)."""
    from ..benchmarks.protocols import IMAGE

    pieces = prompt.human.split(IMAGE)
    marked = len(pieces) - 1
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls[marked:]]
    for k, piece in enumerate(pieces):
        if k > 0 and k - 1 < len(urls):
            parts.append({"type": "image_url", "image_url": {"url": urls[k - 1]}})
        text = piece.strip("\n") if k > 0 or marked else piece
        if text.strip():
            parts.append({"type": "text", "text": text})
    messages = [{"role": "system", "content": prompt.system}] if prompt.system is not None else []
    return [*messages, {"role": "user", "content": parts}]


class Refused(Exception):
    """The endpoint refused this item (4xx other than 429): its reason is recorded with the item."""


class Fatal(SgeoError):
    """The run cannot go on (no key, wrong endpoint, retries spent): one line; the answers so far are kept."""


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Client:
    """POSTs chat requests to one endpoint, retrying what a busy or restarting server answers."""

    def __init__(self, remote: RemoteModel, stop: threading.Event, max_retries: int = MAX_RETRIES):
        self.remote, self.stop, self.max_retries = remote, stop, max_retries
        self.headers = auth_headers()
        self.retries = 0  # for the summary line
        self._lock = threading.Lock()

    def complete(self, body: dict[str, Any], what: str) -> dict[str, Any]:
        """The endpoint's JSON reply to `body` (`what` names the item in errors)."""
        url = self.remote.base + "/chat/completions"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            if self.stop.is_set():
                raise Fatal("stopped")  # another request stopped the run; its error is the one shown
            request = urllib.request.Request(url, data=data, headers=self.headers, method="POST")
            wait_s, problem = None, ""
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    text = response.read().decode("utf-8", "replace")
                try:
                    return json.loads(text)
                except ValueError:
                    raise Fatal(f"{url} did not answer JSON for {what}: {text[:120]!r}") from None
            except urllib.error.HTTPError as error:
                detail = error_detail(error)
                if error.code == 429 or error.code >= 500:
                    wait_s, problem = (
                        retry_after(error.headers.get("Retry-After")),
                        f"HTTP {error.code}: {detail}",
                    )
                elif error.code in FATAL:
                    raise Fatal(f"{url} answered HTTP {error.code} ({detail}); {FATAL[error.code]}") from None
                else:
                    raise Refused(f"endpoint refused the item: HTTP {error.code}: {detail}") from None
            except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
                problem = f"unreachable ({getattr(error, 'reason', error)})"
            if attempt == self.max_retries:
                raise Fatal(
                    f"{url} answered {problem} for {what}, {self.max_retries + 1} tries; the answers so far are "
                    "kept: rerun the same command to go on"
                )
            if wait_s is None:
                wait_s = BACKOFF_S * 2**attempt * (0.5 + random.random())  # jitter: retries do not bunch
            with self._lock:
                self.retries += 1
            if self.stop.wait(min(wait_s, MAX_WAIT_S)):
                raise Fatal("stopped")
        raise AssertionError("unreachable")


def error_detail(error: urllib.error.HTTPError) -> str:
    """The error's message: OpenAI's {"error": {"message"}} where given, else the body's start."""
    try:
        text = error.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    try:
        message = json.loads(text)["error"]["message"]
        text = message if isinstance(message, str) else text
    except (ValueError, KeyError, TypeError):
        pass
    return one_line(text, 200) or str(error.reason)


def request_body(remote: RemoteModel, messages: list, decoding, seed: int | None) -> dict[str, Any]:
    """The chat request of one item under `decoding` (greedy: temperature 0)."""
    body: dict[str, Any] = {"model": remote.name, "messages": messages, "max_tokens": decoding.max_new_tokens}
    if decoding.sample:
        body["temperature"] = decoding.temperature
        body["seed"] = seed
    else:
        body["temperature"] = 0
    return body


def reply_text(reply: dict[str, Any], url: str) -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise Fatal(
            f"{url} answered without choices[0].message.content; is it an OpenAI-compatible API?"
        ) from None
    return "" if content is None else str(content)  # a refusal may come with no content
