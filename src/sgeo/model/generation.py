"""Continuous batching: many answers generated together, one token per answer per step of the model.

A `Sequence` is one prompt (token ids, and the image features its `<image>` tokens stand for) with its own
settings: max new tokens, temperature (0: greedy), top-k, top-p, repetition penalty, seed and stop tokens. `Batch` holds the sequences
being answered and their key/value cache:

- a sequence *joins* at the next step: its prompt is prefilled (the image features scattered over its image
  tokens, as `SpatialGeoForCausalLM.generate` does), and its cache is merged with the running batch's, both
  left-padded to one length and the padding masked out. Rotary position ids count each row's own tokens, so
  where a row's cache lies in the batch changes nothing: greedy answers are the ones a batch of one gives;
- a sequence *leaves* at the step it ends (a stop token, its max new tokens, or cancelled because nobody reads
  it any more), and the columns no row needs any more are dropped.

`Batcher` runs a `Batch` on one thread for the server: requests arriving while the model is busy join at the
next step. `generate` runs the same code in the caller's thread over a list (what `sgeo eval` needs).

Each row's next token is picked as transformers' `generate` picks it: the repetition penalty over the tokens
generated so far (what `generate` penalises when it starts from embeddings), then the argmax, or sampling as
`SeededSampler` (`sgeo eval`) samples: temperature, top-k, top-p, and a draw from the row's own generator,
seeded from the sequence's seed when it has one, so a seeded answer does not depend on the batch it was in.
"""

from __future__ import annotations

import inspect
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# Prompt tokens prefilled in one forward pass: sequences joining together are prefilled in groups of at most
# this many (padded) tokens, so that 32 long prompts arriving at once do not take 32 prompts' activations.
PREFILL_TOKENS = 8192


@dataclass(eq=False)
class Sequence:
    """One prompt to answer and, as the batch generates, its answer's token ids (`tokens`, stop token excluded).

    `image_features` ({tower: [I, ...]}) are the encoded images of its I `<image>` tokens (None: no image). Written by the batch's thread; readers wait on `wait` (threads) or get a call
    through `add_waker` (event loops). `finish_reason` is "stop", "length", "cancelled" or "error" (`error`).
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

    def _append(self, token: int) -> None:
        with self._changed:
            self.tokens.append(token)
            self._notify()

    def _finish(self, reason: str, error: BaseException | None = None) -> None:
        with self._changed:
            if self.done:
                return
            self.finish_reason, self.error = reason, error
            self._notify()

    def _notify(self) -> None:
        self._changed.notify_all()
        for wake in self._wakers:
            wake()


def _cache_kwarg(language_model) -> str:
    """transformers 5 names the cache argument `cache`; 4.x and early 5.x name it `past_key_values`."""
    parameters = inspect.signature(language_model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(keys [B, H, T, D], values)] per layer of a `DynamicCache`."""
    if hasattr(cache, "layers"):
        if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
            raise NotImplementedError("continuous batching needs full-attention layers (no sliding window)")
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers 4.x


def _build_cache(layers: list[tuple[torch.Tensor, torch.Tensor]], config):
    from transformers import DynamicCache

    try:
        return DynamicCache(ddp_cache_data=layers, config=config)
    except TypeError:  # transformers 4.x
        return DynamicCache.from_legacy_cache(tuple(layers))


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.ndim - 1 - dim % tensor.ndim) + [missing, 0]
    return F.pad(tensor, pad)


class Batch:
    """The sequences being generated together and their cache; not thread-safe (one thread drives it).

    Per row: the attention mask over the cache (`mask`, [B, T]: 0 where left padding), the position id of the
    next token (`positions`, [B]) and the token to feed next (`last`, [B]).
    """

    def __init__(self, model, prefill_tokens: int = PREFILL_TOKENS):
        self.model, self.lm = model, model.language_model
        self.prefill_tokens = prefill_tokens
        self._cache_kwarg = _cache_kwarg(self.lm)
        self.rows: list[Sequence] = []
        self.generators: list[torch.Generator | None] = []
        self.cache = self.mask = self.positions = self.last = None
        self.steps = 0  # forward passes run, prefills included
        self.widest = 0  # the most rows one step has run: what a test reads to see batching happen

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- joining -----------------------------------------------------------------------------------------
    def join(self, sequences: list[Sequence]) -> None:
        """Prefill `sequences` (in groups of at most `prefill_tokens` padded tokens) and add them to the batch."""
        group: list[Sequence] = []
        for sequence in sequences:
            longest = max([len(s.input_ids) for s in group] + [len(sequence.input_ids)])
            if group and longest * (len(group) + 1) > self.prefill_tokens:
                self._prefill(group)
                group = []
            group.append(sequence)
        if group:
            self._prefill(group)

    def _prefill(self, sequences: list[Sequence]) -> None:
        longest = max(len(s.input_ids) for s in sequences)
        pad_id = 0 if self.model.config.image_token_id != 0 else 1  # masked out; must not read as <image>
        ids = torch.tensor(
            [[pad_id] * (longest - len(s.input_ids)) + list(s.input_ids) for s in sequences],
            device=self.device,
        )  # [b, N]
        mask = torch.tensor(
            [[0] * (longest - len(s.input_ids)) + [1] * len(s.input_ids) for s in sequences],
            device=self.device,
        )  # [b, N]
        with_images = [s.image_features for s in sequences if s.image_features is not None]
        # the rows' images in row order: `masked_scatter` fills the image tokens row by row
        features = (
            {name: torch.cat([f[name] for f in with_images]) for name in with_images[0]}
            if with_images
            else None
        )
        embeds = self.model.embed_inputs(ids, image_features=features)  # [b, N, H]
        positions = mask.cumsum(-1) - 1
        positions = positions.masked_fill(mask == 0, 1)  # as transformers' generate (padding's are unused)
        output = self.lm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
            **{self._cache_kwarg: _build_cache([], self.lm.config)},
        )  # fmt: skip
        self.steps += 1
        cache = output.cache if hasattr(output, "cache") else output.past_key_values
        generators = [self._generator(s) for s in sequences]
        self._merge(sequences, generators, cache, mask, mask.sum(-1))
        start = len(self.rows) - len(sequences)
        self._advance(output.logits[:, -1, :], range(start, len(self.rows)))

    def _generator(self, sequence: Sequence) -> torch.Generator | None:
        if sequence.temperature <= 0:
            return None
        seed = sequence.seed if sequence.seed is not None else secrets.randbits(63)
        return torch.Generator(device=self.device).manual_seed(seed)

    def _merge(self, sequences, generators, cache, mask, positions) -> None:
        """Append prefilled rows: both caches left-padded (zeros, masked out) to the longer one's length."""
        if not self.rows:
            self.cache, self.mask, self.positions = cache, mask, positions
        else:
            length = max(self.mask.shape[1], mask.shape[1])
            layers = [
                (
                    torch.cat([_left_pad(k0, length, 2), _left_pad(k1, length, 2)]),
                    torch.cat([_left_pad(v0, length, 2), _left_pad(v1, length, 2)]),
                )
                for (k0, v0), (k1, v1) in zip(_layers(self.cache), _layers(cache), strict=True)
            ]  # [B + b, H, T, D]
            self.cache = _build_cache(layers, self.lm.config)
            self.mask = torch.cat([_left_pad(self.mask, length, 1), _left_pad(mask, length, 1)])
            self.positions = torch.cat([self.positions, positions])
        fresh = torch.zeros_like(positions)  # set by the caller's `_advance`
        self.last = torch.cat([self.last, fresh]) if self.rows else fresh
        self.rows += sequences
        self.generators += generators

    # -- stepping ----------------------------------------------------------------------------------------
    def step(self) -> None:
        """One new token for every row."""
        self._leave([i for i, s in enumerate(self.rows) if s.cancelled])
        if not self.rows:
            return
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        output = self.lm(
            input_ids=self.last[:, None], attention_mask=self.mask, position_ids=self.positions[:, None],
            use_cache=True, logits_to_keep=1, **{self._cache_kwarg: self.cache},
        )  # fmt: skip
        self.steps += 1
        self.widest = max(self.widest, len(self.rows))
        self.positions = self.positions + 1
        self._advance(output.logits[:, -1, :], range(len(self.rows)))

    def _advance(self, logits: torch.Tensor, rows: Iterable[int]) -> None:
        """Pick each row's next token from its logits; rows that end leave the batch."""
        rows = list(rows)
        picks = self._pick(logits.float(), rows)  # [len(rows)]
        self.last[rows] = picks
        ended = []
        for i, token in zip(rows, picks.tolist(), strict=True):
            sequence = self.rows[i]
            if token in sequence.stop_ids:
                sequence._finish("stop")
            else:
                sequence._append(token)
                if len(sequence.tokens) >= sequence.max_new_tokens:
                    sequence._finish("length")
            if sequence.done or sequence.cancelled:
                ended.append(i)
        self._leave(ended)

    def _pick(self, logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """Greedy rows: the argmax; sampled rows: temperature, top-k, top-p and a draw from the row's
        generator, exactly as `SeededSampler` draws (so `sgeo eval`'s seeded answers stay what they were).
        First, as transformers' `RepetitionPenaltyLogitsProcessor`, the row's penalty on its tokens so far."""
        for j, i in enumerate(rows):
            sequence = self.rows[i]
            if sequence.repetition_penalty != 1.0 and sequence.tokens:
                seen = torch.tensor(sequence.tokens, device=logits.device)
                score = logits[j].gather(0, seen)
                penalised = torch.where(
                    score < 0, score * sequence.repetition_penalty, score / sequence.repetition_penalty
                )
                logits[j] = logits[j].scatter(0, seen, penalised)
        picks = logits.argmax(dim=-1)  # [b]
        for j, i in enumerate(rows):
            generator, sequence = self.generators[i], self.rows[i]
            if generator is None:
                continue
            row = logits[j : j + 1] / sequence.temperature  # [1, V]
            if 0 < sequence.top_k < row.shape[-1]:
                kth = torch.topk(row, sequence.top_k, dim=-1).values[:, -1:]
                row = row.masked_fill(row < kth, float("-inf"))
            if sequence.top_p < 1.0:  # as transformers' TopPLogitsWarper: the smallest set over top_p, >= 1
                ordered, order = torch.sort(row, descending=False)
                dropped = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1 - sequence.top_p
                dropped[..., -1:] = False
                row = row.masked_fill(dropped.scatter(1, order, dropped), float("-inf"))
            picks[j] = torch.multinomial(torch.softmax(row, dim=-1)[0], 1, generator=generator)[0]
        return picks

    def _leave(self, ended: list[int]) -> None:
        if not ended:
            return
        for i in ended:
            self.rows[i]._finish("cancelled")  # a no-op for rows that finished
        keep = [i for i in range(len(self.rows)) if i not in set(ended)]
        self.rows = [self.rows[i] for i in keep]
        self.generators = [self.generators[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.positions = self.last = None
            return
        index = torch.tensor(keep, device=self.device)
        mask = self.mask[index]
        first = int(mask.any(0).int().argmax())  # columns before it are padding in every row left
        self.cache = _build_cache(
            [(k[index, :, first:], v[index, :, first:]) for k, v in _layers(self.cache)], self.lm.config
        )
        self.mask, self.positions, self.last = mask[:, first:], self.positions[index], self.last[index]

    def fail(self, error: BaseException) -> None:
        """Every row ends with `error` and the batch starts empty (after an exception in the model)."""
        for sequence in self.rows:
            sequence._finish("error", error)
        self.rows, self.generators = [], []
        self.cache = self.mask = self.positions = self.last = None


def stop_ids(model, processor) -> frozenset[int]:
    """The tokens that end an answer: the processor's (the template's end-of-turn token, the eos ids, where
    `sgeo ask` and `sgeo eval` cut the answer) and the LLM's generation config's (where `generate` stops)."""
    config = getattr(model.language_model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return frozenset([*processor.stop_token_ids, *eos])


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
                    sequence._finish("error", error)
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
                            sequence._finish("cancelled")
                        return
                    chores = list(self._chores)
                    self._chores.clear()
                    if any(s.cancelled for s in self._waiting):  # their readers have gone: free their memory
                        for sequence in self._waiting:
                            if sequence.cancelled:
                                sequence._finish("cancelled")
                        self._waiting = deque(s for s in self._waiting if not s.done)
                    room = self.max_batch - len(self.batch.rows)
                    joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                for chore in chores:
                    chore()
                for sequence in joining:
                    if sequence.cancelled:
                        sequence._finish("cancelled")
                joining = [s for s in joining if not s.done]
                try:
                    if joining:
                        self.batch.join(joining)
                    self.batch.step()
                except BaseException as error:  # the readers raise it; the next requests start afresh
                    for sequence in joining:
                        sequence._finish("error", error)
                    self.batch.fail(error)
