"""A micro-batch from dataset items: padded tokens, and the features of its images read in one store call
(cached) or their pixels stacked (online); `drop_clip`, the clip-drop ablation on those features."""

from __future__ import annotations

import numpy as np
import torch

from sgeo.pipeline.features import decode


def drop_clip(clip: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Zero each image's CLIP features [I, T, Dc] with probability p (the reference's clip-drop ablation)."""
    if p <= 0 or clip.shape[0] == 0:
        return clip
    keep = torch.rand(clip.shape[0], generator=generator) >= p  # [I], drawn on the CPU generator
    return clip * keep.to(clip.device, clip.dtype).view(-1, *[1] * (clip.dim() - 1))


class Collator:
    """Items -> a padded batch with `image_features` {tower: [I, ...]} (cached) or `pixel_values` [I, 3, S, S]
        (online), I = the items with an image, in batch order. I may be 0: the trainer still runs the adapters (on
        nothing) so every rank's graph holds the same parameters. `feature_set`: the FeatureSet (or FeatureStore)
    read for cached features (None online). `shapes`: {tower: feature shape per image}."""

    def __init__(self, processor, feature_set=None, shapes: dict | None = None):
        self.processor, self.feature_set = processor, feature_set
        self.shapes = {name: tuple(shape) for name, shape in (shapes or {}).items()}

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.processor.pad([{"input_ids": it["input_ids"], "labels": it["labels"]} for it in items])
        batch["ids"] = [it.get("id", "") for it in items]  # sample ids, for errors that name the samples
        with_image = [it for it in items if it["row"] >= 0]
        if not with_image:
            batch["image_features"] = {name: torch.zeros((0, *shape)) for name, shape in self.shapes.items()}
        elif "pixel_values" in with_image[0]:
            batch["pixel_values"] = torch.stack([it["pixel_values"] for it in with_image])  # [I, 3, S, S]
        else:
            words = self.feature_set.read(np.array([it["row"] for it in with_image], dtype=np.int64))
            dtypes = getattr(self.feature_set, "dtypes", None) or dict.fromkeys(words, self.feature_set.dtype)
            batch["image_features"] = {name: decode(w, dtypes[name]) for name, w in words.items()}  # [I, ...]
        return batch
