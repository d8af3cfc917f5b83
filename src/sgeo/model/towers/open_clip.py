"""Any open_clip ViT: one block's tokens without the class token: [B, T, D]."""

from __future__ import annotations

import torch

from ..pixel_stats import CLIP_MEAN, CLIP_STD
from ..tower_spec import TowerSpec
from .base import SharedPixels, Tower, block_indices


class OpenCLIPTower(Tower):
    kind = "open_clip"
    mean, std = CLIP_MEAN, CLIP_STD

    def __init__(self, spec: TowerSpec, path: str | None, shared: SharedPixels):
        super().__init__(spec, shared)
        import open_clip

        name = spec.options.get("model_name")
        if name is None:
            raise ValueError(
                "an open_clip tower needs options.model_name (an open_clip name or 'local-dir:DIR')"
            )
        pretrained = None if name.startswith(("local-dir:", "hf-hub:")) else path
        model = open_clip.create_model(name, pretrained=pretrained, load_weights=path is not None)
        self.visual = model.visual
        (self.block,) = block_indices(spec.layers, len(self.visual.transformer.resblocks))

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # stop_early: no block after the one read is computed
        out = self.visual.forward_intermediates(
            pixel_values, indices=[self.block], stop_early=True, intermediates_only=True, output_fmt="NLC"
        )
        return out["image_intermediates"][0]  # [B, T, D]

    @classmethod
    def fingerprint(cls, spec: TowerSpec, weights: str) -> dict:
        return {"backend": "open_clip", "model_name": spec.options.get("model_name"), "weights": weights,
                "layer": spec.layers, "shape": list(spec.feature_shape)}  # fmt: skip
