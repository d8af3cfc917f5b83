"""MoGe's DINOv2 backbone (SpatialGeo's geometry tower): chosen blocks, normed, CLS dropped: [B, L, T, D]."""

from __future__ import annotations

import torch

from ...errors import SgeoError
from ..pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from ..tower_spec import TowerSpec, last_layers
from .base import SharedPixels, Tower, block_indices
from .moge_checkpoint import DINOV2_GEOMETRY, DINOV2_PATCH, load_moge_backbone, moge_backbone_name


class MoGeTower(Tower):
    kind = "moge"
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # MoGe's own normalisation, read when `input` is `own`
    default_adapter = "summed_mlp2x_gelu"
    default_input = "shared"  # SpatialGeo feeds MoGe the CLIP-preprocessed pixels

    def __init__(self, spec: TowerSpec, path: str | None, shared: SharedPixels):
        super().__init__(spec, shared)
        backbone_name = spec.options["backbone"]
        if path is None:
            from moge.model.dinov2.hub import backbones

            self.backbone = getattr(backbones, backbone_name)(pretrained=False)
        else:
            self.backbone = load_moge_backbone(path)
            if self.backbone.embed_dim != spec.hidden_size:
                raise SgeoError(
                    f"{path} holds a DINOv2 of width {self.backbone.embed_dim}, but the model's {spec.name} adapter "
                    f"reads {backbone_name} ({spec.hidden_size}); use the MoGe checkpoint it was trained with"
                )
        self.blocks = block_indices(spec.layers, len(self.backbone.blocks))
        if not getattr(self.backbone, "chunked_blocks", False):
            # the blocks after the last one read would be computed and thrown away
            self.backbone.blocks = self.backbone.blocks[: max(self.blocks) + 1]

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.to(next(self.backbone.parameters()).dtype)
        blocks = self.backbone.get_intermediate_layers(x, n=self.blocks, norm=True)
        return torch.stack(blocks, dim=1)  # [B, L, T, D]

    @classmethod
    def describe(cls, path: str, layers=None) -> dict:
        backbone = moge_backbone_name(path)
        width, _ = DINOV2_GEOMETRY[backbone]
        return {"kind": cls.kind, "layers": last_layers(4) if layers is None else layers, "hidden_size": width,
                "patch_size": DINOV2_PATCH, "options": {"backbone": backbone}}  # fmt: skip

    @classmethod
    def fingerprint(cls, spec: TowerSpec, weights: str) -> dict:
        # the fields (and values) stores written before towers were a list carry: those stores still match
        n = len(spec.layers)
        return {
            "backbone": spec.options["backbone"],
            "weights": weights,
            "layers": n if spec.layers == last_layers(n) else spec.layers,
            "input": "moge" if spec.input == "own" else "clip",
            "shape": list(spec.feature_shape),
        }
