"""CLIP through transformers (`CLIPVisionModel`, LLaVA-1.5's tower): one hidden state, CLS dropped: [B, T, D]."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..pixel_stats import CLIP_MEAN, CLIP_STD
from ..tower_spec import TowerSpec
from .base import SharedPixels, Tower, block_indices


def encoder_layers(model):
    """The ModuleList of transformer blocks of an HF vision model (5.x: `model.encoder`; 4.x: `vision_model`)."""
    return getattr(model, "vision_model", model).encoder


class CLIPTower(Tower):
    kind = "clip"
    mean, std = CLIP_MEAN, CLIP_STD

    def __init__(self, spec: TowerSpec, path: str | None, shared: SharedPixels):
        super().__init__(spec, shared)
        from transformers import CLIPVisionConfig, CLIPVisionModel

        if path is None:
            self.model = CLIPVisionModel(CLIPVisionConfig(**spec.options["vision_config"]))
        else:
            self.model = CLIPVisionModel.from_pretrained(path, local_files_only=True)
        encoder = encoder_layers(self.model)
        (block,) = block_indices(spec.layers, len(encoder.layers))
        # Only the blocks up to the one read: later blocks would be computed and thrown away (LLaVA reads
        # block 23 of 24). The kept blocks' output is the truncated encoder's last hidden state, bit for bit.
        encoder.layers = encoder.layers[: block + 1]

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values.to(self.model.dtype))
        return out.last_hidden_state[:, 1:]  # [B, T, D]: CLS dropped

    @classmethod
    def describe(cls, path: str, layers=None) -> dict:
        from transformers import CLIPVisionConfig

        vision = CLIPVisionConfig.from_pretrained(path)  # a CLIPModel directory gives its vision_config
        return {
            "kind": cls.kind, "layers": -2 if layers is None else layers, "hidden_size": vision.hidden_size,
            "patch_size": vision.patch_size, "image_size": vision.image_size,
            "options": {"vision_config": vision_config_dict(vision)},
        }  # fmt: skip

    @classmethod
    def fingerprint(cls, spec: TowerSpec, weights: str) -> dict:
        # the fields (and values) stores written before towers were a list carry: those stores still match
        return {"backend": "hf", "model_name": None, "weights": weights, "layer": spec.layers,
                "shape": list(spec.feature_shape)}  # fmt: skip


def vision_config_dict(vision) -> dict:
    """A vision config as the JSON a model's config.json nests: the geometry, without what saving adds
    (architectures, dtype, version), so the same tower gives the same config however it was read."""
    data = vision.to_diff_dict()
    for key in ("transformers_version", "architectures", "dtype", "torch_dtype", "_name_or_path"):
        data.pop(key, None)
    return json.loads(json.dumps(data))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
