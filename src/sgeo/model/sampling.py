"""Sampling that a rerun repeats: each sequence of a batch draws from its own seeded generator.

`SeededSampler` is a logits processor that samples the next token itself (temperature, then top-k, as
transformers orders its warpers) and leaves only that token possible, so `generate(do_sample=False)` picks
it. One generator per row, seeded from the item, makes an answer independent of the batch it was in and of
where a killed run resumed: the same item, model and seed give the same answer.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor


def item_seed(seed: int, question_id: str) -> int:
    """A 63-bit seed for one item: the same for the same (seed, question id), whatever else runs."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{question_id}".encode()).digest()[:8], "big") >> 1


class SeededSampler(LogitsProcessor):
    def __init__(self, temperature: float, top_k: int, seeds: list[int], device: torch.device | str):
        if temperature <= 0:
            raise ValueError(f"sampling needs a positive temperature, got {temperature}")
        self.temperature, self.top_k = temperature, top_k
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature  # [B, V]
        if 0 < self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]  # [B, 1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)  # [B, V]
        picks = torch.stack(
            [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators, strict=True)]
        )  # [B, 1]
        return torch.full_like(scores, float("-inf")).scatter_(1, picks, 0.0)
