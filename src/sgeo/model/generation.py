"""Generating answers: `generate` answers a list in the caller's thread (what `sgeo eval` needs, through
`generate_answers`); `Batcher` runs a batch on one thread for the server, where requests arriving while the
model is busy join at the next step. Both drive a `continuous_batch.Batch` of `sequence.Sequence`s, and end
each answer at `end_of_answer_ids` (the ids `processor.answer_ids` cuts an answer at, and the LLM's eos).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import torch

from .continuous_batch import Batch
from .sequence import Sequence


def configured_eos_ids(model) -> list[int]:
    """The eos ids the LLM's generation config names (where `generate` stops): an int, a list or none."""
    config = getattr(model.language_model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def end_of_answer_ids(model, processor) -> list[int]:
    """The tokens that end an answer, each once: the processor's (the template's end-of-turn token, the eos
    ids, where `processor.answer_ids` cuts the answer) then the LLM's generation config's."""
    return list(dict.fromkeys([*processor.stop_token_ids, *configured_eos_ids(model)]))


def stop_ids(model, processor) -> frozenset[int]:
    """`end_of_answer_ids` as a set: what a `Sequence` stops at."""
    return frozenset(end_of_answer_ids(model, processor))


def generation_defaults(model) -> dict:
    """What the LLM's generation config asks of `generate` beyond our own settings (transformers' values where
    it says nothing): top-k and top-p when sampling, the repetition penalty always (Qwen2.5's is 1.05)."""
    config = getattr(model.language_model, "generation_config", None)

    def setting(name: str, default: float) -> float:
        value = getattr(config, name, None)
        return default if value is None else value

    return {
        "top_k": int(setting("top_k", 50)),
        "top_p": float(setting("top_p", 1.0)),
        "repetition_penalty": float(setting("repetition_penalty", 1.0)),
    }


def generate_answers(
    model, processor, samples: list[dict], pictures: list[list], max_new_tokens: int, temperature: float = 0.0,
    top_k: int = 0, seeds: list[int] | None = None, max_batch: int = 32,
) -> list[str]:  # fmt: skip
    """One answer per tokenized sample (`processor.tokenize` output; its `<image>` tokens stand for its images
    in `pictures`, in order): `sgeo eval`'s batched generation on this module's batch. Greedy at temperature
    0, else sampled as `SeededSampler` samples, row i from a generator seeded with `seeds[i]`; the generation
    config's repetition penalty applies, as in `generate`. The images of all samples are encoded in one pass,
    as `model.generate(pixel_values=...)` does; answers are cut and decoded by `processor.decode_answer`."""
    images = [image for item in pictures for image in item]
    features = None
    if images:
        with torch.inference_mode():
            features = model.encode_images(processor.preprocess_images(images))  # {tower: [I, ...]}
    stops, starts = stop_ids(model, processor), [0]
    penalty = generation_defaults(model)["repetition_penalty"]
    for item in pictures:
        starts.append(starts[-1] + len(item))
    sequences = [
        Sequence(
            sample["input_ids"],
            {name: f[starts[i] : starts[i + 1]] for name, f in features.items()} if pictures[i] else None,
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, repetition_penalty=penalty,
            seed=None if seeds is None else seeds[i], stop_ids=stops,
        )
        for i, sample in enumerate(samples)
    ]  # fmt: skip
    generate(model, sequences, max_batch)
    return [processor.decode_answer(sequence.tokens) for sequence in sequences]


def generate(model, sequences: list[Sequence], max_batch: int = 32) -> list[Sequence]:
    """Answer every sequence in the caller's thread, at most `max_batch` at a time, continuously batched (a
    finished sequence's place goes to the next waiting one); returns `sequences`, each with its `tokens`."""
    batch, waiting = Batch(model), deque(sequences)
    with torch.inference_mode():
        while waiting or batch.rows:
            joining = [waiting.popleft() for _ in range(min(max_batch - len(batch.rows), len(waiting)))]
            try:
                if joining:
                    batch.join(joining)
                batch.step()
            except BaseException as error:
                for sequence in [*batch.rows, *joining, *waiting]:
                    sequence.finish("error", error)
                raise
    return sequences


class Batcher:
    """A `Batch` driven by one thread, the model's: `submit` a sequence and it joins at the model's next step.

    At most `max_batch` sequences generate at once; the others wait in arrival order. An exception in the
    model ends the sequences in the batch with it (their readers raise it) and the thread carries on.
    Other work on the model (encoding images) is handed to the same thread with `call_soon` and runs between
    steps: on a CPU, two threads computing at once would each want every core, and both crawl.
    """

    def __init__(self, model, max_batch: int = 32):
        self.max_batch = max_batch
        self.batch = Batch(model)
        self._waiting: deque[Sequence] = deque()
        self._chores: deque[Callable[[], None]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sgeo-batcher", daemon=True)
        self._thread.start()

    def submit(self, sequence: Sequence) -> Sequence:
        with self._changed:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._waiting.append(sequence)
            self._changed.notify()
        return sequence

    def call_soon(self, chore: Callable[[], None]) -> None:
        """Run `chore()` on the model's thread before its next step (it handles its own exceptions)."""
        with self._changed:
            self._chores.append(chore)
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._changed:
                    self._changed.wait_for(
                        lambda: self._waiting or self.batch.rows or self._chores or self._closed
                    )
                    if self._closed:
                        for sequence in [*self.batch.rows, *self._waiting]:
                            sequence.finish("cancelled")
                        return
                    chores = list(self._chores)
                    self._chores.clear()
                    if any(s.cancelled for s in self._waiting):  # their readers have gone: free their memory
                        for sequence in self._waiting:
                            if sequence.cancelled:
                                sequence.finish("cancelled")
                        self._waiting = deque(s for s in self._waiting if not s.done)
                    room = self.max_batch - len(self.batch.rows)
                    joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                for chore in chores:
                    chore()
                for sequence in joining:
                    if sequence.cancelled:
                        sequence.finish("cancelled")
                joining = [s for s in joining if not s.done]
                try:
                    if joining:
                        self.batch.join(joining)
                    self.batch.step()
                except BaseException as error:  # the readers raise it; the next requests start afresh
                    for sequence in joining:
                        sequence.finish("error", error)
                    self.batch.fail(error)
