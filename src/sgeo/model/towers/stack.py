"""`VisionTowers`: a model's frozen towers in fusion order; the one road from pixels to what stores hold."""

from __future__ import annotations

import torch
from torch import nn

from .base import SharedPixels
from .registry import tower_class


def shared_pixels(specs) -> SharedPixels:
    """The processor prepares pixels as the first tower reads them (CLIP's size and statistics in LLaVA)."""
    first = specs[0]
    cls = tower_class(first.kind)
    return SharedPixels(first.image_size, tuple(cls.mean), tuple(cls.std))


def build_tower(spec, path: str | None, shared: SharedPixels) -> nn.Module:
    return tower_class(spec.kind)(spec, path, shared)


class VisionTowers(nn.Module):
    """The frozen towers named by `specs` (or the subset given paths); `forward` -> {name: features}."""

    def __init__(self, specs, paths: dict[str, str | None]):
        super().__init__()
        shared = shared_pixels(specs)
        self.towers = nn.ModuleDict(
            {spec.name: build_tower(spec, paths[spec.name], shared) for spec in specs if spec.name in paths}
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: dropout and friends stay off whatever the caller asks

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def names(self) -> list[str]:
        return list(self.towers)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        names = self.names if names is None else names
        return {name: self.towers[name](pixel_values) for name in names}

    def encode_images(
        self, pixel_values: torch.Tensor, names: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """pixels [B, 3, S, S] -> {tower: [B, T, D] or [B, L, T, D]}, for every tower or those `names`: exactly
        what the feature stores hold."""
        return self(pixel_values.to(self.device), names)
