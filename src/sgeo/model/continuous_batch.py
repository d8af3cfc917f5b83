"""`Batch`: many answers generated together, one token per answer per step of the model (continuous batching).

`Batch` holds the sequences being answered (`sequence.Sequence`) and their key/value cache:

- a sequence *joins* at the next step: its prompt is prefilled (the image features scattered over its image
  tokens, as `SpatialGeoForCausalLM.generate` does), and its cache is merged with the running batch's, both
  left-padded to one length and the padding masked out. Rotary position ids count each row's own tokens, so
  where a row's cache lies in the batch changes nothing: greedy answers are the ones a batch of one gives;
- a sequence *leaves* at the step it ends (a stop token, its max new tokens, or cancelled because nobody reads
  it any more), and the columns no row needs any more are dropped.

Each row's next token is picked by `token_choice.pick_tokens`. `generation.generate` and `generation.Batcher`
drive a batch (in the caller's thread, or in one of their own).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .kv_cache import build_cache, cache_kwarg, cache_layers, left_pad
from .sequence import Sequence
from .token_choice import pick_tokens, row_generator

# Prompt tokens prefilled in one forward pass: sequences joining together are prefilled in groups of at most
# this many (padded) tokens, so that 32 long prompts arriving at once do not take 32 prompts' activations.
PREFILL_TOKENS = 8192


class Batch:
    """The sequences being generated together and their cache; not thread-safe (one thread drives it).

    Per row: the attention mask over the cache (`mask`, [B, T]: 0 where left padding), the position id of the
    next token (`positions`, [B]) and the token to feed next (`last`, [B]).
    """

    def __init__(self, model, prefill_tokens: int = PREFILL_TOKENS):
        self.model, self.lm = model, model.language_model
        self.prefill_tokens = prefill_tokens
        self._cache_kwarg = cache_kwarg(self.lm)
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
            **{self._cache_kwarg: build_cache([], self.lm.config)},
        )  # fmt: skip
        self.steps += 1
        cache = output.cache if hasattr(output, "cache") else output.past_key_values
        generators = [row_generator(s, self.device) for s in sequences]
        self._merge(sequences, generators, cache, mask, mask.sum(-1))
        start = len(self.rows) - len(sequences)
        self._advance(output.logits[:, -1, :], range(start, len(self.rows)))

    def _merge(self, sequences, generators, cache, mask, positions) -> None:
        """Append prefilled rows: both caches left-padded (zeros, masked out) to the longer one's length."""
        if not self.rows:
            self.cache, self.mask, self.positions = cache, mask, positions
        else:
            length = max(self.mask.shape[1], mask.shape[1])
            layers = [
                (
                    torch.cat([left_pad(k0, length, 2), left_pad(k1, length, 2)]),
                    torch.cat([left_pad(v0, length, 2), left_pad(v1, length, 2)]),
                )
                for (k0, v0), (k1, v1) in zip(cache_layers(self.cache), cache_layers(cache), strict=True)
            ]  # [B + b, H, T, D]
            self.cache = build_cache(layers, self.lm.config)
            self.mask = torch.cat([left_pad(self.mask, length, 1), left_pad(mask, length, 1)])
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
        picks = pick_tokens(logits.float(), [self.rows[i] for i in rows], [self.generators[i] for i in rows])
        self.last[rows] = picks
        ended = []
        for i, token in zip(rows, picks.tolist(), strict=True):
            sequence = self.rows[i]
            if token in sequence.stop_ids:
                sequence.finish("stop")
            else:
                sequence.append(token)
                if len(sequence.tokens) >= sequence.max_new_tokens:
                    sequence.finish("length")
            if sequence.done or sequence.cancelled:
                ended.append(i)
        self._leave(ended)

    def _leave(self, ended: list[int]) -> None:
        if not ended:
            return
        for i in ended:
            self.rows[i].finish("cancelled")  # a no-op for rows that finished
        keep = [i for i in range(len(self.rows)) if i not in set(ended)]
        self.rows = [self.rows[i] for i in keep]
        self.generators = [self.generators[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.positions = self.last = None
            return
        index = torch.tensor(keep, device=self.device)
        mask = self.mask[index]
        first = int(mask.any(0).int().argmax())  # columns before it are padding in every row left
        self.cache = build_cache(
            [(k[index, :, first:], v[index, :, first:]) for k, v in cache_layers(self.cache)], self.lm.config
        )
        self.mask, self.positions, self.last = mask[:, first:], self.positions[index], self.last[index]

    def fail(self, error: BaseException) -> None:
        """Every row ends with `error` and the batch starts empty (after an exception in the model)."""
        for sequence in self.rows:
            sequence.finish("error", error)
        self.rows, self.generators = [], []
        self.cache = self.mask = self.positions = self.last = None
