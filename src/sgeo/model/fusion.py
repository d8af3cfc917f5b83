"""Fusion of the two adapted token sequences into the visual tokens the LLM reads."""

from __future__ import annotations

import torch


def interleave(clip_tokens: torch.Tensor, moge_tokens: torch.Tensor) -> torch.Tensor:
    """c0, m0, c1, m1, ...: [B, T, H] x 2 -> [B, 2T, H]."""
    if clip_tokens.shape != moge_tokens.shape:
        raise ValueError(
            f"cannot interleave CLIP tokens {tuple(clip_tokens.shape)} with MoGe {tuple(moge_tokens.shape)}"
        )
    return torch.stack((clip_tokens, moge_tokens), dim=2).flatten(1, 2)


def concat(clip_tokens: torch.Tensor, moge_tokens: torch.Tensor) -> torch.Tensor:
    """All CLIP tokens, then all MoGe tokens: [B, T, H] x 2 -> [B, 2T, H]."""
    return torch.cat((clip_tokens, moge_tokens), dim=1)


FUSIONS = {"interleave": interleave, "concat": concat}

# Which encoders' tokens reach the LLM. An ablation zeroes the other branch's tokens in place, so the
# sequence (and every position) stays that of the full model and only the information changes.
VISUAL_BRANCHES = ("both", "clip", "moge")


def keep_branches(
    branches: str, clip_tokens: torch.Tensor, moge_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if branches not in VISUAL_BRANCHES:
        raise ValueError(f"unknown visual_branches {branches!r}; known: {list(VISUAL_BRANCHES)}")
    if branches == "clip":
        moge_tokens = torch.zeros_like(moge_tokens)
    elif branches == "moge":
        clip_tokens = torch.zeros_like(clip_tokens)
    return clip_tokens, moge_tokens


def fuse(name: str, clip_tokens: torch.Tensor, moge_tokens: torch.Tensor) -> torch.Tensor:
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {sorted(FUSIONS)}")
    return FUSIONS[name](clip_tokens, moge_tokens)
