"""Depth Anything (v1 / v2, `DepthAnythingForDepthEstimation`): its DINOv2 backbone's feature maps as the depth
head reads them: [B, L, T, D].

The layers default to the backbone's own `out_indices` (hidden-state indices: [5, 12, 18, 24] for
Depth-Anything-V2-Large-hf), each normed with the backbone's `layernorm` (`apply_layernorm`), CLS dropped (the
reassemble stage's `readout_type: ignore`). The depth neck and head are never run, and not kept after loading.
"""

from __future__ import annotations

import torch

from ..pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from ..tower_spec import TowerSpec
from .base import SharedPixels, Tower, block_indices
from .clip import read_json, vision_config_dict
from .dinov2 import prefix_tokens, read_blocks

MODEL_TYPES = ("depth_anything",)  # config.json's model_type (v1 and v2 -hf checkpoints both say this)


def _check_model_type(path: str) -> None:
    model_type = read_json(f"{path}/config.json").get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"its config.json has model_type {model_type!r}, not {MODEL_TYPES[0]!r}")


class DepthAnythingTower(Tower):
    kind = "depth_anything"
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # its DPTImageProcessor's statistics
    default_adapter = "summed_mlp2x_gelu"

    def __init__(self, spec: TowerSpec, path: str | None, shared: SharedPixels):
        super().__init__(spec, shared)
        if path is None:
            from transformers import Dinov2Backbone, Dinov2Config

            options = dict(spec.options["backbone_config"])
            options.pop("model_type", None)
            self.backbone = Dinov2Backbone(Dinov2Config(**options))
        else:
            from transformers import DepthAnythingForDepthEstimation

            _check_model_type(path)
            model = DepthAnythingForDepthEstimation.from_pretrained(path, local_files_only=True)
            self.backbone = model.backbone
            model.neck = model.head = None  # released now, not when the cycle collector gets to `model`
            del model
        layers = self.backbone.encoder.layer
        self.blocks = block_indices(spec.layers, len(layers))
        self.backbone.encoder.layer = layers[: max(self.blocks) + 1]  # none after the last one read
        self.prefix = prefix_tokens(self.backbone.config)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # Dinov2Backbone norms its feature maps only where its config says so (every Depth Anything does)
        norm = self.backbone.config.apply_layernorm
        return read_blocks(self.backbone, self.blocks, self.prefix, pixel_values, norm=norm)

    @classmethod
    def describe(cls, path: str, layers=None) -> dict:
        from transformers import DepthAnythingConfig

        _check_model_type(path)
        backbone = DepthAnythingConfig.from_pretrained(path).backbone_config
        if backbone is None or backbone.model_type != "dinov2":
            raise ValueError("its backbone_config is not a DINOv2 (a timm or hub backbone is not supported)")
        return {
            "kind": cls.kind, "layers": list(backbone.out_indices) if layers is None else layers,
            "hidden_size": backbone.hidden_size, "patch_size": backbone.patch_size,
            "options": {"backbone_config": vision_config_dict(backbone)},
        }  # fmt: skip
