"""`Sequence`: one prompt being answered, with its own generation settings and, as it is generated, its answer.

Written by the thread that drives the batch (`continuous_batch.Batch`), read by any other: `wait` blocks a
thread, `add_waker` calls an event loop back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(eq=False)
class Sequence:
    """One prompt to answer and, as the batch generates, its answer's token ids (`tokens`, stop token excluded).

    `image_features` ({tower: [I, ...]}) are the encoded images of its I `<image>` tokens (None: no image).
    Written by the batch's thread (`append`, `finish`); readers wait on `wait` (threads) or get a call through
    `add_waker` (event loops). `finish_reason` is "stop", "length", "cancelled" or "error" (`error`).
    """

    input_ids: list[int]
    image_features: dict[str, torch.Tensor] | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_ids: frozenset[int] = frozenset()
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: BaseException | None = None
    submitted: float = field(default_factory=time.monotonic)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _wakers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _cancelled: bool = False

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        """Stop generating this sequence: it leaves the batch at the next step (or never joins)."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def wait(self, seen: int, timeout: float | None = None) -> None:
        """Block until there are more than `seen` tokens or the sequence is done."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.tokens) > seen or self.done, timeout)

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Call `wake()` (from the batch's thread) whenever a token comes or the sequence ends."""
        with self._changed:
            self._wakers.append(wake)
            if self.done:
                wake()

    def append(self, token: int) -> None:
        """A generated token (the batch's thread)."""
        with self._changed:
            self.tokens.append(token)
            self._notify()

    def finish(self, reason: str, error: BaseException | None = None) -> None:
        """End the sequence with `reason` (and `error`); a no-op once it has ended."""
        with self._changed:
            if self.done:
                return
            self.finish_reason, self.error = reason, error
            self._notify()

    def _notify(self) -> None:
        self._changed.notify_all()
        for wake in self._wakers:
            wake()
