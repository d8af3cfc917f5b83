"""How each row's next token is picked, as transformers' `generate` picks it: the repetition penalty over the
tokens generated so far (what `generate` penalises when it starts from embeddings), then the argmax, or sampling
as `SeededSampler` (`sgeo eval`) samples: temperature, top-k, top-p, and a draw from the row's own generator,
seeded from the sequence's seed when it has one, so a seeded answer does not depend on the batch it was in.
"""

from __future__ import annotations

import secrets

import torch

from .sequence import Sequence


def row_generator(sequence: Sequence, device: torch.device) -> torch.Generator | None:
    """The generator a sampled sequence draws from (its seed's, else a fresh random one); None when greedy."""
    if sequence.temperature <= 0:
        return None
    seed = sequence.seed if sequence.seed is not None else secrets.randbits(63)
    return torch.Generator(device=device).manual_seed(seed)


def pick_tokens(
    logits: torch.Tensor, sequences: list[Sequence], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """The next token of each row of `logits` ([b, V], float; changed in place), row j being `sequences[j]`
    drawing from `generators[j]`. Greedy rows: the argmax; sampled rows: temperature, top-k, top-p and a draw
    from the row's generator, exactly as `SeededSampler` draws (so `sgeo eval`'s seeded answers stay what they
    were). First, as transformers' `RepetitionPenaltyLogitsProcessor`, the row's penalty on its tokens so far."""
    for j, sequence in enumerate(sequences):
        if sequence.repetition_penalty != 1.0 and sequence.tokens:
            seen = torch.tensor(sequence.tokens, device=logits.device)
            score = logits[j].gather(0, seen)
            penalised = torch.where(
                score < 0, score * sequence.repetition_penalty, score / sequence.repetition_penalty
            )
            logits[j] = logits[j].scatter(0, seen, penalised)
    picks = logits.argmax(dim=-1)  # [b]
    for j, (sequence, generator) in enumerate(zip(sequences, generators, strict=True)):
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
