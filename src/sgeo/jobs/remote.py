"""`sgeo eval --model openai:NAME --endpoint URL`: a model behind any OpenAI-compatible chat endpoint (GPT-4.1,
a vLLM server, another `sgeo serve`) answers a benchmark, scored by the same loaders and scorers as a local one.

Each item becomes one `POST <base>/chat/completions`: the protocol's system prompt as a system message (when
it has one), then one user message whose content parts follow the human turn, each "<image>" replaced by its
image as a data URL (the file's own bytes where the API takes them, PNG otherwise). Greedy decoding is sent as
temperature 0; a sampling protocol sends its temperature and the item's seed (`item_seed`, as the local path),
but not its top-k, which OpenAI's API does not have. The key comes from OPENAI_API_KEY (sent as
`Authorization: Bearer`; none is sent without it, as local servers want none).

Requests run concurrently (at most `concurrency` at a time); a 429 or 5xx answer, or a dropped connection, is
retried with exponential backoff, honouring `Retry-After`. Answers are appended to answers.jsonl by one
thread as they arrive (in arrival order), so a stopped run resumes like a local one. An item the endpoint
refuses (400, 413, 422: an image too large, too many images) is recorded with the endpoint's reason as its
`error` (answered again by a rerun); a refusal of everything (401, 403, 404, or the first requests all
refused) stops the run in one line, the answers so far kept.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from ..errors import SgeoError, one_line

PREFIX = "openai:"
DEFAULT_CONCURRENCY = 8
MAX_RETRIES = 6  # retries of one request on 429 / 5xx / a dropped connection, then the run stops
BACKOFF_S = 1.0  # first wait; doubled each retry (with jitter), unless the server says Retry-After
MAX_WAIT_S = 120.0  # the longest single wait, even when Retry-After asks for more
TIMEOUT_S = 600.0  # one request (a long answer of a slow model)
FATAL = {401: "set OPENAI_API_KEY to the endpoint's key", 403: "check OPENAI_API_KEY's permissions",
         404: "check --endpoint (the API base, e.g. http://host:8000/v1) and the model name"}  # fmt: skip
REFUSED_ALL = 3  # this many refusals before any answer: the endpoint refuses every item, stop
_PASSED_AS_IS = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


@dataclass(frozen=True)
class RemoteModel:
    name: str  # the model name the endpoint knows
    base: str  # the API base, ".../v1"

    @property
    def identity(self) -> str:
        """What answers.jsonl records as `model`: a resumed run must ask the same model at the same endpoint."""
        return f"{PREFIX}{self.name}@{self.base}"


def is_remote(model: str) -> bool:
    return str(model).startswith(PREFIX)


def remote_model(model: str, endpoint: str | None) -> RemoteModel | None:
    """The remote model `--model openai:NAME --endpoint URL` names, None for a local one; refused in one line
    when one of the two options comes without the other, or the URL is not http(s)."""
    if not is_remote(model):
        if endpoint is not None:
            raise SgeoError(
                f"--endpoint applies to a model behind an API; pass --model openai:NAME (not {model!r})"
            )
        return None
    name = str(model)[len(PREFIX) :].strip()
    if not name:
        raise SgeoError("--model openai: needs the endpoint's model name, e.g. --model openai:gpt-4.1")
    if endpoint is None:
        raise SgeoError(
            f"--model {model} needs --endpoint URL (an OpenAI-compatible API base, e.g. https://api.openai.com/v1)"
        )
    url = endpoint.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SgeoError(f"--endpoint {endpoint!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000/v1")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    elif not parts.path:
        url += "/v1"  # a bare host:port: vLLM, llama.cpp and sgeo serve all answer under /v1
    return RemoteModel(name, url)


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
    from ..pipeline.benchmarks.protocols import IMAGE

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


def _retry_after(value: str | None) -> float | None:
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
        self.headers = {"Content-Type": "application/json"}
        if key := os.environ.get("OPENAI_API_KEY"):  # hosted endpoints want one; local servers none
            self.headers["Authorization"] = f"Bearer {key}"
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
                detail = _detail(error)
                if error.code == 429 or error.code >= 500:
                    wait_s, problem = (
                        _retry_after(error.headers.get("Retry-After")),
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


def _detail(error: urllib.error.HTTPError) -> str:
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


def answer_remote(
    remote: RemoteModel,
    items: list,
    prompts: dict,
    image_root: Path,
    answers: Path,
    decoding,
    concurrency: int = DEFAULT_CONCURRENCY,
    run: dict[str, Any] | None = None,
    say=lambda text: None,
    max_retries: int = MAX_RETRIES,
) -> dict[str, int]:
    """Ask `remote` every item, at most `concurrency` at a time, appending each record to `answers` as it
    arrives (records as `answers.answer_record` writes them). Returns {"answered", "refused", "retries"}."""
    from tqdm.auto import tqdm

    from ..pipeline.benchmarks import model_images
    from ..pipeline.images import load_image, resolve_inside
    from .answers import answer_record, append_answer
    from .seeded_sampling import item_seed

    run = run or {}
    stop = threading.Event()
    client = Client(remote, stop, max_retries)
    url = remote.base + "/chat/completions"

    def ask(item) -> dict[str, Any]:
        """One item's record (called in a worker thread; only the main thread writes the file)."""
        prompt = prompts[item.question_id]
        extra = {**run, "prompt": prompt.human}
        try:
            loaded = [load_image(resolve_inside(image_root, path)) for path in prompt.images]
        except SgeoError as error:  # unreadable, missing or outside the root: recorded, as the local path
            return answer_record(item, "", error=str(error), **extra)
        pictures = model_images(prompt, [picture for picture, _ in loaded])
        if prompt.tile or prompt.upscale_tiny:  # the protocol changed the pictures: send what it made
            urls = [data_url(b"", picture) for picture in pictures]
        else:
            urls = [data_url(raw) for _, raw in loaded]
        seed = item_seed(int(run.get("seed", 0)), item.question_id) if decoding.sample else None
        body = request_body(remote, messages_for(prompt, urls), decoding, seed)
        try:
            reply = client.complete(body, f"item {item.question_id}")
        except Refused as refused:
            return {**answer_record(item, "", error=str(refused), **extra), "refused": True}
        return answer_record(item, reply_text(reply, url), **extra)

    counts = {"answered": 0, "refused": 0, "retries": 0}
    fatal: BaseException | None = None
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sgeo-remote")
    pending: set[Future] = set()
    queue = iter(items)
    try:
        with tqdm(total=len(items), desc="eval", unit="q", file=sys.stderr, dynamic_ncols=True) as bar:
            # at most `concurrency` requests in flight, so a stop leaves little unrecorded work behind
            for item in queue:
                pending.add(executor.submit(ask, item))
                if len(pending) >= concurrency:
                    break
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        record = future.result()
                    except Fatal as error:
                        if fatal is None and str(error) != "stopped":
                            fatal = error
                        stop.set()
                        continue
                    if record.pop("refused", False):
                        counts["refused"] += 1
                        if counts["answered"] == 0 and counts["refused"] >= min(REFUSED_ALL, len(items)):
                            fatal = fatal or Fatal(
                                f"{url} refused the first {counts['refused']} items ({record['error']}); "
                                "is this benchmark's request something the endpoint takes?"
                            )
                            stop.set()
                    elif "error" not in record:
                        counts["answered"] += 1
                    append_answer(answers, record)
                    bar.update(1)
                while not stop.is_set() and len(pending) < concurrency:
                    item = next(queue, None)
                    if item is None:
                        break
                    pending.add(executor.submit(ask, item))
    finally:
        stop.set()  # a Ctrl-C: the workers stop retrying; answers already written stay
        executor.shutdown(wait=fatal is not None, cancel_futures=True)
    counts["retries"] = client.retries
    if fatal is not None:
        raise fatal
    if counts["retries"]:
        say(f"eval: {counts['retries']} requests retried (HTTP 429 / 5xx / connection)")
    return counts
