"""The tower kinds: name -> the class that builds it. Adding a kind is one module and one line here.

A leaf module (no torch, no modeling code): the config validates tower kinds against these names, and the class
is imported only when a tower is built.
"""

from __future__ import annotations

import importlib

KINDS = {
    "clip": "sgeo.model.towers.clip:CLIPTower",  # transformers CLIPVisionModel (LLaVA-1.5)
    "open_clip": "sgeo.model.towers.open_clip:OpenCLIPTower",  # any open_clip ViT
    "moge": "sgeo.model.towers.moge:MoGeTower",  # MoGe v1 / v2's DINOv2 backbone (SpatialGeo)
    "siglip": "sgeo.model.towers.siglip:SigLIPTower",  # transformers SiglipVisionModel / Siglip2VisionModel
    "dinov2": "sgeo.model.towers.dinov2:DINOv2Tower",  # transformers Dinov2Model (several normed blocks)
    "depth_anything": "sgeo.model.towers.depth_anything:DepthAnythingTower",  # its DINOv2 backbone's feature maps
}


def tower_class(kind: str):
    if kind not in KINDS:
        raise ValueError(f"unknown tower kind {kind!r}; known: {sorted(KINDS)}")
    module, _, name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
