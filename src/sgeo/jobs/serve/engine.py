"""One loaded model shared by the web page and the API: image chats, answers streamed token by token, one at a time.

Every use of the model or its tokenizer (encoding an image, counting a prompt, generating) holds one lock, so
requests from both front ends queue on it in turn: the model never runs two requests at once, and the fast
tokenizer, which is not safe to share between threads, is never used concurrently. Generation runs on a
worker thread and hands text to the caller through a transformers `TextIteratorStreamer`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from PIL import Image

from ...errors import SgeoError
from ...model.conversation import IMAGE_TOKEN
from ..ask import TEMPLATE, ImageChat


class _Cancelled(Exception):
    """Raised inside `generate` (from the streamer) when nobody reads the answer any more."""


def _streamer_class():
    from transformers import TextIteratorStreamer

    class CancellableStreamer(TextIteratorStreamer):
        """A `TextIteratorStreamer` whose `cancel()` stops the generation at its next token."""

        def __init__(self, tokenizer):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.cancelled = threading.Event()

        def cancel(self) -> None:
            self.cancelled.set()

        def put(self, value):
            if self.cancelled.is_set():
                raise _Cancelled
            super().put(value)

    return CancellableStreamer


class Engine:
    """The model, its processor and the lock; `name` is what API replies call the model."""

    def __init__(self, model, processor, name: str):
        self.model, self.processor, self.name = model, processor, name
        self.lock = threading.Lock()
        self.max_length = int(processor.model_max_length)

    def open_chat(self, image: Image.Image, history: Sequence[tuple[str, str]] = ()) -> ImageChat:
        """Encode `image` once; `history` holds earlier (question, answer) pairs of the conversation."""
        import torch

        with self.lock, torch.inference_mode():
            chat = ImageChat(self.model, self.processor, image)
        for i, (question, answer) in enumerate(history):
            value = f"{IMAGE_TOKEN}\n{question}" if i == 0 else question  # as ImageChat.ask writes turns
            chat.turns += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
        return chat

    def prompt_tokens(self, chat: ImageChat, question: str) -> int:
        """Tokens the next prompt takes (image tokens included); refuses a prompt the model cannot hold."""
        value = f"{IMAGE_TOKEN}\n{question}" if not chat.turns else question
        turns = [*chat.turns, {"from": "human", "value": value}]
        try:
            with self.lock:
                ids = self.processor.tokenize(turns, TEMPLATE, add_generation_prompt=True)["input_ids"]
        except ValueError as error:  # the processor refuses a cut through the image's tokens
            raise SgeoError(f"the conversation is too long for the model: {error}") from None
        if len(ids) >= self.max_length:  # the processor cut the prompt: nothing would be left to answer in
            raise SgeoError(
                f"the conversation is {len(ids)}+ tokens, at the model's limit of {self.max_length}; "
                "start a new conversation or shorten it"
            )
        return len(ids)

    def reply(self, chat: ImageChat, question: str, temperature: float, max_new_tokens: int) -> Reply:
        """The answer to `question` as an iterator of text pieces; generation starts when it is first read."""
        return Reply(self, chat, question, temperature, max_new_tokens)


class Reply:
    """Text pieces of one answer as they are generated; after the last one, `answer`, `tokens`, `finish_reason`.

    Like `answer` (which ImageChat strips), the pieces carry no leading or trailing whitespace overall: the
    leading whitespace is dropped and trailing whitespace is held back until more text follows. Closing the
    iterator before the answer is complete stops the generation at its next token, and the chat keeps no
    trace of the question.
    """

    def __init__(
        self, engine: Engine, chat: ImageChat, question: str, temperature: float, max_new_tokens: int
    ):
        self.engine, self.chat, self.question = engine, chat, question
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.answer: str | None = None
        self.tokens = 0
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        streamer = _streamer_class()(self.engine.processor.tokenizer)
        outcome: dict = {}

        def generate() -> None:
            try:
                with self.engine.lock:
                    outcome.update(
                        self.chat.ask(self.question, self.temperature, self.max_new_tokens, streamer)
                    )
            except _Cancelled:
                pass
            except BaseException as error:  # handed to the reading thread, which raises it
                outcome["error"] = error
            finally:
                streamer.end()  # wakes the reader also when generate stopped half way

        worker = threading.Thread(target=generate, name="sgeo-generate", daemon=True)
        worker.start()
        pending, started = "", False
        try:
            for text in streamer:
                if not started:
                    text = text.lstrip()
                    started = bool(text)
                kept = (pending + text).rstrip()
                pending = (pending + text)[len(kept) :]
                if kept:
                    yield kept
        finally:
            streamer.cancel()  # a no-op when generation has finished
            # An abandoned iterator can be finalised by the garbage collector on any thread, the worker's too
            # (it holds the streamer); a thread cannot join itself, and the cancel has already stopped it.
            if worker is not threading.current_thread():
                worker.join()
        if "error" in outcome:
            raise outcome["error"]
        self.answer, self.tokens = outcome["answer"], outcome["tokens"]
        self.finish_reason = "length" if self.tokens >= self.max_new_tokens else "stop"
