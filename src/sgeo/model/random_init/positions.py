"""The demo towers' position rule: a fixed 2D sin-cos grid in every patch position table, so that, as in a
pretrained ViT, each patch token says where it is (bench/grounding_probe.py measures what it changes)."""

from __future__ import annotations

import torch


@torch.no_grad()
def write_sincos_table(table: torch.Tensor, scale: float) -> None:
    """A position table [1 + grid^2, D] set to `scale` x a 2D sin-cos grid over its patches, the CLS row zeros.
    A DINOv2 table keeps its own grid (37 x 37 for 518 px), which the model interpolates to the input's."""
    from timm.layers import build_sincos2d_pos_embed

    grid = round((table.shape[0] - 1) ** 0.5)
    table[0] = 0.0
    table[1:] = scale * build_sincos2d_pos_embed([grid, grid], dim=table.shape[1])


def write_clip_and_moge_positions(clip, moge, scale: float) -> None:
    """Both towers of a preset (a `CLIPVisionModel`, a MoGe v1 model) by `write_sincos_table`."""
    from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

    # found by type: transformers 4 nests it under `vision_model`, 5 does not
    clip_embeddings = next(m for m in clip.modules() if isinstance(m, CLIPVisionEmbeddings))
    for table in (clip_embeddings.position_embedding.weight, moge.backbone.pos_embed[0]):
        write_sincos_table(table, scale)


def write_dinov2_positions(model: torch.nn.Module, scale: float) -> None:
    """The DINOv2 position table of `model` (a Dinov2Model, or a Depth Anything holding one as its backbone)
    by `write_sincos_table`."""
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

    embeddings = next(m for m in model.modules() if isinstance(m, Dinov2Embeddings))
    write_sincos_table(embeddings.position_embeddings[0], scale)  # [1 + grid^2, D]
