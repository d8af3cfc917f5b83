"""One loaded model shared by the web page and the API: image chats, answers generated in batches and streamed.

- One thread runs the model (`Batcher`). Answers are generated in batches: a request arriving while the
  model is busy joins the batch at the next step, each with its own sampling settings, stop tokens and
  length; its tokens stream to its reader as they come.
- Images are encoded on that thread between steps, several at a time (`FeatureEncoder`); the features of
  the last images are kept by their pixels' hash, so a conversation sent again with each new turn (as API
  clients do) has its image encoded once.
- At most `max_batch` answers generate together and `max_queue` more requests wait; past that `admit` refuses
  with `Busy` (the API's 429, the page's "busy"), so a crowd of clients cannot pile up unbounded work. A
  request holds its slot until its answer ends or its reader goes away (closing a `Reply` stops its
  generation at the next step).

The tokenizer is used under `lock`: fast tokenizers are not safe to share between threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from PIL import Image

from ...errors import SgeoError
from ...model.conversation import clean_text, question_turn
from ...model.generation import Batcher, generation_defaults, stop_ids
from ...model.processing import THINK_CLOSE, THINK_OPEN
from ...model.sequence import Sequence as Generation
from ..ask import TEMPLATE
from ..seeded_sampling import item_seed

ENCODE_BATCH = 16  # images encoded together at most (per image on 2 CPU cores: 25 ms alone, 15 ms in 16)
FEATURE_CACHE_BYTES = 256 * 2**20  # encoded images kept for conversations that come back


@dataclass
class Chat:
    """A conversation about one image: its features (encoded once), the turns so far and the template they
    are rendered with, as `ImageChat`'s."""

    image_features: dict  # {tower: [1, ...]}
    template: object  # the model's own (`processor.resolve_template`)
    turns: list[dict] = field(default_factory=list)

    def next_turns(self, question: str) -> list[dict]:
        """The turns with `question` added: the image's placeholder opens the first one, as `sgeo ask` writes it."""
        return [*self.turns, question_turn(question, first=not self.turns)]


class Busy(Exception):
    """Every slot is taken; `retry_after`: seconds after which one is likely free."""

    def __init__(self, held: int, retry_after: int):
        super().__init__(
            f"the server is busy: all its {held} places (answering and waiting) are taken; retry in "
            f"{retry_after} s"
        )
        self.retry_after = retry_after


class Slot:
    """A request's place in the server, given back once (`release` may be called any number of times)."""

    def __init__(self, engine: Engine):
        self._engine, self._held = engine, True

    def release(self) -> None:
        with self._engine._slots_lock:
            if self._held:
                self._held = False
                self._engine._held -= 1


class FeatureEncoder:
    """Pixels -> {tower: features}, up to `ENCODE_BATCH` images per pass of the towers, on the model's
    thread between generation steps (`run_soon`); the features of recent images are kept (up to
    `FEATURE_CACHE_BYTES`), keyed by a hash of their pixels."""

    def __init__(self, model, processor, run_soon: Callable[[Callable[[], None]], None]):
        self.model, self.processor, self._run_soon = model, processor, run_soon
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._cache_bytes = 0
        self._waiting: OrderedDict[str, tuple] = OrderedDict()  # key -> (pixels, future)
        self._scheduled = False
        self._lock = threading.Lock()
        self.encoded = 0  # images run through the towers: what a test reads to see the cache work

    def encode(self, image: Image.Image) -> Future:
        """A future of (clip [1, T, Dc], moge [1, L, T, Dm]) for `image`."""
        pixels = self.processor.preprocess_images([image])  # [1, 3, S, S]; here, on the caller's thread
        key = hashlib.sha256(pixels.float().numpy().tobytes()).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                future: Future = Future()
                future.set_result(self._cache[key])
                return future
            if key in self._waiting:  # the same image on its way already
                return self._waiting[key][1]
            future = Future()
            self._waiting[key] = (pixels, future)
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            self._run_soon(self._encode_some)
        return future

    def _encode_some(self) -> None:
        """One pass of the towers over waiting images; comes back for the rest after the next step."""
        import torch

        with self._lock:
            keys = list(self._waiting)[:ENCODE_BATCH]
            jobs = [self._waiting[key] for key in keys]
        try:
            with torch.inference_mode():
                encoded = self.model.encode_images(torch.cat([pixels for pixels, _ in jobs]))
            features = [{name: f[i : i + 1].clone() for name, f in encoded.items()} for i in range(len(jobs))]
        except BaseException as error:  # the waiting requests fail with it; the thread goes on
            features = error
        with self._lock:
            for i, key in enumerate(keys):
                _, future = self._waiting.pop(key)
                if isinstance(features, BaseException):
                    future.set_exception(features)
                else:
                    self._keep(key, features[i])
                    future.set_result(features[i])
            self.encoded += len(keys)
            again = self._scheduled = bool(self._waiting)
        if again:
            self._run_soon(self._encode_some)

    def cancel_waiting(self) -> None:
        with self._lock:
            for _, future in self._waiting.values():
                future.cancel()
            self._waiting.clear()

    def _keep(self, key: str, features: dict) -> None:
        self._cache[key] = features
        self._cache_bytes += sum(t.numel() * t.element_size() for t in features.values())
        while self._cache_bytes > FEATURE_CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= sum(t.numel() * t.element_size() for t in old.values())


class Engine:
    """The model, its processor, the model's thread (generation and image encoding) and the request slots;
    `name` is what API replies call the model."""

    def __init__(self, model, processor, name: str, max_batch: int = 32, max_queue: int = 32):
        self.model, self.processor, self.name = model, processor, name
        self.lock = threading.Lock()
        self.max_length = int(processor.model_max_length)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.batcher = Batcher(model, max_batch)
        self.encoder = FeatureEncoder(model, processor, self.batcher.call_soon)
        self._slots_lock = threading.Lock()
        self._held = 0
        self._replies = itertools.count()  # numbers the seeds of replies that bring none
        self._seconds = 1.0  # a running average of how long an answer takes, for Retry-After
        self.template = processor.resolve_template(TEMPLATE)  # the model's own, as `sgeo ask` uses
        self.stop_ids = stop_ids(model, processor)
        self.defaults = generation_defaults(model)  # top-k, top-p, repetition penalty as `generate` applies

    def close(self) -> None:
        """Stop the model's thread (waiting requests end cancelled)."""
        self.batcher.close()
        self.encoder.cancel_waiting()

    # -- slots ---------------------------------------------------------------------------------------
    def admit(self) -> Slot:
        """A slot for one request, or `Busy` when `max_batch + max_queue` requests are in already."""
        with self._slots_lock:
            if self._held >= self.max_batch + self.max_queue:
                raise Busy(self._held, self.retry_after())
            self._held += 1
        return Slot(self)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: about one answer's time (1 to 60)."""
        return min(60, max(1, math.ceil(self._seconds)))

    def _answered(self, seconds: float) -> None:
        self._seconds = 0.8 * self._seconds + 0.2 * seconds

    # -- chats ---------------------------------------------------------------------------------------
    def template_for(self, system: str | None = None):
        """The model's template, its system prompt replaced by `system` when given (an SgeoError where the
        template has none)."""
        if system is None:
            return self.template
        with self.lock:  # a chat template is probed with the tokenizer
            return self.processor.resolve_template(TEMPLATE, system)

    def open_chat(self, image: Image.Image, history: Sequence[tuple[str, str]] = (), template=None) -> Chat:
        """Encode `image` (or find it encoded); `history` holds earlier (question, answer) pairs; `template`:
        the model's own unless given (`template_for`)."""
        return self._chat(self.encoder.encode(image).result(), history, template)

    async def open_chat_async(
        self, image: Image.Image, history: Sequence[tuple[str, str]] = (), template=None
    ) -> Chat:
        """`open_chat` for an event loop: waits for the encoder without holding a thread."""
        from starlette.concurrency import run_in_threadpool

        future = await run_in_threadpool(self.encoder.encode, image)  # preprocessing is CPU work
        return self._chat(await asyncio.wrap_future(future), history, template)

    def _chat(self, features: tuple, history: Sequence[tuple[str, str]], template=None) -> Chat:
        chat = Chat(features, template=template or self.template)
        for question, answer in history:
            chat.turns = [*chat.next_turns(question), {"from": "gpt", "value": answer}]
        return chat

    def prompt_ids(self, chat: Chat, question: str) -> list[int]:
        """The next prompt's token ids (image tokens included); refuses a prompt the model cannot hold."""
        try:
            with self.lock:
                ids = self.processor.tokenize(
                    chat.next_turns(question), chat.template, add_generation_prompt=True
                )
        except ValueError as error:  # the processor refuses a cut through the image's tokens
            raise SgeoError(f"the conversation is too long for the model: {error}") from None
        ids = ids["input_ids"]
        if len(ids) >= self.max_length:  # the processor cut the prompt: nothing would be left to answer in
            raise SgeoError(
                f"the conversation is {len(ids)}+ tokens, at the model's limit of {self.max_length}; "
                "start a new conversation or shorten it"
            )
        return ids

    def prompt_tokens(self, chat: Chat, question: str) -> int:
        return len(self.prompt_ids(chat, question))

    def reply(
        self, chat: Chat, question: str, temperature: float, max_new_tokens: int, seed: int | None = None,
        slot: Slot | None = None, prompt_ids: list[int] | None = None, stop: Sequence[str] = (),
    ) -> Reply:  # fmt: skip
        """The answer to `question` as text pieces; generation starts when it is first read. `slot` (from
        `admit`) is given back when the answer ends or the reply is closed; `prompt_ids`: `prompt_ids(chat,
        question)` when the caller has it already; `stop`: strings that end the answer (not included)."""
        question = clean_text(question)
        if not question:
            raise SgeoError("the question is empty once <image> is taken out; ask it in words")
        if seed is None:
            # Sampling without a seed draws from a sequence fixed at start, as transformers' sampling did from
            # torch's default generator: the same requests in the same order get the same answers again.
            seed = item_seed(0, f"reply-{next(self._replies)}")
        reply = Reply(self, chat, question, temperature, max_new_tokens, seed, slot)
        reply.prompt, reply.stop = prompt_ids, tuple(stop)
        return reply

    def decode(self, tokens: list[int]) -> str:
        """The text of generated tokens so far, as the page and the stream show it: without an opening empty
        `<think>...</think>` block, which `decode_answer` drops too (held back until it closes)."""
        with self.lock:
            text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
        if text.lstrip().startswith(THINK_OPEN):
            return text.split(THINK_CLOSE, 1)[1] if THINK_CLOSE in text else ""
        return text

    def decode_answer(self, tokens: list[int]) -> str:
        """A finished answer's text, as `sgeo ask` and `sgeo eval` decode it."""
        with self.lock:
            return self.processor.decode_answer(tokens)


class _Pieces:
    """Decoded text -> the pieces to send: like `answer` (stripped), no leading whitespace overall, and
    trailing whitespace held back until more text follows; an unfinished UTF-8 character waits for its end."""

    def __init__(self):
        self.decoded, self.pending, self.started = "", "", False

    def feed(self, text: str, final: bool = False) -> str:
        if (text.endswith("\ufffd") and not final) or not text.startswith(self.decoded):
            return ""
        new, self.decoded = text[len(self.decoded) :], text
        if not self.started:
            new = new.lstrip()
            self.started = bool(new)
        kept = (self.pending + new).rstrip()
        self.pending = (self.pending + new)[len(kept) :]
        return kept


class Reply:
    """Text pieces of one answer as they are generated (iterate, or `async for` over `stream()`); after the
    last one, `answer`, `tokens` and `finish_reason` ("stop" or "length").

    The answer ends at a stop token of the model, after `max_new_tokens`, or before the first of the `stop`
    strings (OpenAI's `stop`): text that may be the start of one is held back until it is not.

    Like `ImageChat.ask`'s answer, the pieces carry no leading or trailing whitespace overall. Closing the
    reply before the answer is complete stops its generation at the next step, and the chat keeps no trace of
    the question; a complete answer is added to the chat's turns.
    """

    def __init__(
        self, engine: Engine, chat: Chat, question: str, temperature: float, max_new_tokens: int,
        seed: int | None = None, slot: Slot | None = None,
    ):  # fmt: skip
        self.engine, self.chat, self.question = engine, chat, question
        self.temperature, self.max_new_tokens, self.seed = temperature, max_new_tokens, seed
        self.slot = slot
        self.answer: str | None = None
        self.tokens = 0
        self.finish_reason: str | None = None
        self.prompt: list[int] | None = None  # the prompt's ids; None: tokenized when generation starts
        self.stop: tuple[str, ...] = ()
        self._stopped: tuple[str, int] | None = None  # (text, tokens) when a stop string ended the answer
        self._closed = False
        self._generation: Generation | None = None
        self._turns: list[dict] = []

    def _start(self) -> Generation:
        if self._generation is None and self._closed:  # closed before it started: nothing to generate
            self._generation = Generation([], max_new_tokens=0)
            self._generation.finish("cancelled")
        if self._generation is None:
            self._turns = self.chat.next_turns(self.question)
            self._generation = self.engine.batcher.submit(
                Generation(
                    self.prompt or self.engine.prompt_ids(self.chat, self.question), self.chat.image_features,
                    max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                    seed=self.seed, stop_ids=self.engine.stop_ids, **self.engine.defaults,
                )
            )  # fmt: skip
        return self._generation

    def _pieces(self, generation: Generation, pieces: _Pieces) -> tuple[str, bool]:
        """(the text to send now, whether the answer is over)."""
        done = generation.done  # read before the tokens: every token of a finished generation is in
        tokens = list(generation.tokens)
        if not tokens:
            return "", done
        text, stopped = _until_stop(self.engine.decode(tokens), self.stop, final=done)
        if stopped:
            generation.cancel()  # the rest is not wanted
            self._stopped, done = (text, len(tokens)), True
        return pieces.feed(text, final=done), done

    def __iter__(self) -> Iterator[str]:
        try:
            generation, pieces, seen = self._start(), _Pieces(), 0
            while True:
                generation.wait(seen)
                seen = len(generation.tokens)
                piece, done = self._pieces(generation, pieces)
                if piece:
                    yield piece
                if done:
                    break
            self._complete(generation)
        finally:
            self.close()

    async def stream(self) -> AsyncIterator[str]:
        """The pieces for an event loop: waits for tokens without holding a thread."""
        try:
            generation, pieces = self._start(), _Pieces()
            loop, changed = asyncio.get_running_loop(), asyncio.Event()
            generation.add_waker(_waker(loop, changed))
            while True:
                changed.clear()
                piece, done = self._pieces(generation, pieces)
                if piece:
                    yield piece
                if done:
                    break
                await changed.wait()
            self._complete(generation)
        finally:
            self.close()

    def _complete(self, generation: Generation) -> None:
        if self._stopped is not None:
            text, self.tokens = self._stopped
            self.answer, self.finish_reason = text.strip(), "stop"
        elif generation.error is not None:
            raise generation.error
        elif generation.finish_reason == "cancelled":
            return
        else:
            self.answer = self.engine.decode_answer(generation.tokens)
            self.tokens, self.finish_reason = len(generation.tokens), generation.finish_reason
        self.chat.turns = [*self._turns, {"from": "gpt", "value": self.answer}]
        self.engine._answered(time.monotonic() - generation.submitted)

    def close(self) -> None:
        """Stop generating (a no-op once the answer is complete) and give the slot back."""
        self._closed = True
        if self._generation is not None:
            self._generation.cancel()
        if self.slot is not None:
            self.slot.release()


def _until_stop(text: str, stop: tuple[str, ...], final: bool) -> tuple[str, bool]:
    """(text before the first stop string, True), or (the text, False) less, unless `final`, an end that may
    be the start of a stop string."""
    found = [k for k in (text.find(s) for s in stop) if k >= 0]
    if found:
        return text[: min(found)], True
    if final:
        return text, False
    held = max((n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
    return text[: len(text) - held], False


def _waker(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    def wake() -> None:  # runs on the batcher's thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(event.set)

    return wake
