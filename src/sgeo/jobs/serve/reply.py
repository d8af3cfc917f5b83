"""One answer as the server streams it (`Reply`), the conversation it belongs to (`Chat`) and the place in the
server its request holds (`Slot`). A `Reply` runs on an `engine.Engine`: its batcher, tokenizer and stop tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from ...model.conversation import question_turn
from ...model.sequence import Sequence as Generation


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


class Slot:
    """A request's place in the server, given back once (`release` may be called any number of times):
    `give_back` is the engine's, called on the first `release`."""

    def __init__(self, give_back: Callable[[], None]):
        self._give_back, self._held = give_back, True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._give_back()


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
        self, engine, chat: Chat, question: str, temperature: float, max_new_tokens: int,
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
            self._generation = Generation([], max_new_tokens=0, finish_reason="cancelled")
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
        self.engine.answered(time.monotonic() - generation.submitted)

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
