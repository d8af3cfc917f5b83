"""The training dataset: item i is sample i's tokens and either its store row (cached) or its pixels (online)."""

from __future__ import annotations

from pathlib import Path

import torch

from sgeo.errors import SgeoError
from sgeo.pipeline.training.join import JoinResult


def estimated_length(sample: dict, num_image_tokens: int) -> int:
    """LLaVA's `modality_lengths`: words of the conversation, plus the visual tokens of an image."""
    words = sum(len(str(turn.get("value") or "").split()) for turn in sample["conversations"])
    return words + (num_image_tokens if "image" in sample else 0)


class TrainingDataset(torch.utils.data.Dataset):
    """Item i: tokens of sample i and either its store row (cached) or its pixels (online)."""

    def __init__(self, join: JoinResult, processor, template: str, image_root: str | Path | None = None):
        self.samples, self.rows = join.samples, join.rows
        self.names = [join.name(k) for k in range(len(join.samples))]
        self.processor, self.template = processor, template
        self.image_root = None if image_root is None else Path(image_root)

    def __len__(self) -> int:
        return len(self.samples)

    def has_image(self) -> list[bool]:
        return [row >= 0 for row in self.rows]

    def lengths(self) -> list[int]:
        return [estimated_length(s, self.processor.num_image_tokens) for s in self.samples]

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        try:
            item = dict(self.processor.tokenize(sample["conversations"], self.template))
        except ValueError as error:
            raise SgeoError(f"sample {self.names[i]!r}: {error}") from None
        item["row"] = self.rows[i]
        item["id"] = self.names[i]
        if self.image_root is not None and self.rows[i] >= 0:
            from sgeo.pipeline.images import load_image, resolve_inside

            image, _ = load_image(resolve_inside(self.image_root, sample["image"]))
            item["pixel_values"] = self.processor.preprocess_images([image])[0]  # [3, S, S]
        return item
