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
import itertools
import math
import threading
from collections.abc import Sequence

from PIL import Image

from ...errors import SgeoError
from ...inference.image_chat import TEMPLATE
from ...model.conversation import clean_text
from ...model.generation import Batcher, generation_defaults, stop_ids
from ...model.processing import THINK_CLOSE, THINK_OPEN
from ...model.sampling import item_seed
from .defaults import MAX_BATCH, MAX_QUEUE
from .features import FeatureEncoder
from .reply import Chat, Reply, Slot


class Busy(Exception):
    """Every slot is taken; `retry_after`: seconds after which one is likely free."""

    def __init__(self, held: int, retry_after: int):
        super().__init__(
            f"the server is busy: all its {held} places (answering and waiting) are taken; retry in "
            f"{retry_after} s"
        )
        self.retry_after = retry_after


class Engine:
    """The model, its processor, the model's thread (generation and image encoding) and the request slots;
    `name` is what API replies call the model."""

    def __init__(self, model, processor, name: str, max_batch: int = MAX_BATCH, max_queue: int = MAX_QUEUE):
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
        return Slot(self._release_slot)

    def _release_slot(self) -> None:
        with self._slots_lock:
            self._held -= 1

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: about one answer's time (1 to 60)."""
        return min(60, max(1, math.ceil(self._seconds)))

    def answered(self, seconds: float) -> None:
        """Count a finished answer's `seconds` into the average `retry_after` reads."""
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
