"""Fusion of the towers' adapted token sequences (in tower order) into the visual tokens the LLM reads."""

from __future__ import annotations

import torch


def interleave(tokens: list[torch.Tensor]) -> torch.Tensor:
    """One token of each tower in turn (SpatialGeo: c0, m0, c1, m1, ...): n x [B, T, H] -> [B, nT, H]."""
    shapes = {tuple(t.shape) for t in tokens}
    if len(shapes) > 1:
        raise ValueError(f"cannot interleave token sequences of shapes {[tuple(t.shape) for t in tokens]}")
    return torch.stack(tokens, dim=2).flatten(1, 2)


def concat(tokens: list[torch.Tensor]) -> torch.Tensor:
    """All of the first tower's tokens, then the next's: [B, T_i, H] -> [B, sum T_i, H]."""
    return torch.cat(tokens, dim=1)


FUSIONS = {"interleave": interleave, "concat": concat}


def keep_branches(branches: str, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`both`: every tower's tokens; a tower's name: only its tokens, the others zeroed in place, so the sequence
    (and every position) stays that of the full model and only the information changes (an ablation)."""
    if branches == "both":
        return tokens
    if branches not in tokens:
        raise ValueError(f"unknown visual_branches {branches!r}; known: {['both', *tokens]}")
    return {name: t if name == branches else torch.zeros_like(t) for name, t in tokens.items()}


def fuse(name: str, tokens: list[torch.Tensor]) -> torch.Tensor:
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {sorted(FUSIONS)}")
    return FUSIONS[name](tokens)
