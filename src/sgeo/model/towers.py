"""The two frozen vision towers. Each maps CLIP-preprocessed pixels to patch tokens of chosen layers:

- CLIP: pixels [B, 3, H, W] -> [B, T, Dc], one hidden layer (LLaVA-1.5: the penultimate), CLS dropped.
- MoGe: pixels [B, 3, H, W] -> [B, L, T, Dm], the last L blocks of MoGe's DINOv2 backbone, normed, CLS dropped.

Towers load through their own libraries' loaders (transformers, open_clip, moge) from a local path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .configuration import SpatialGeoConfig

# MoGe's own input normalisation (ImageNet), used when `moge_input="moge"`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class HFCLIPTower(nn.Module):
    """transformers `CLIPVisionModel`; returns the hidden state of `layer` without the CLS token."""

    def __init__(self, config: SpatialGeoConfig, path: str | None):
        super().__init__()
        from transformers import CLIPVisionModel

        if path is None:  # meta-device construction for parameter counting
            self.model = CLIPVisionModel(config.clip_vision_config)
        else:
            self.model = CLIPVisionModel.from_pretrained(path, local_files_only=True)
        self.layer = config.clip_layer

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values.to(self.model.dtype), output_hidden_states=True)
        return out.hidden_states[self.layer][:, 1:]  # [B, T, Dc]


class OpenCLIPTower(nn.Module):
    """Any open_clip ViT; returns block `layer`'s tokens without the class token."""

    def __init__(self, config: SpatialGeoConfig, path: str | None):
        super().__init__()
        import open_clip

        name = config.clip_model_name
        if name is None:
            raise ValueError(
                "the open_clip backend needs clip_model_name (an open_clip name or 'local-dir:DIR')"
            )
        pretrained = None if name.startswith(("local-dir:", "hf-hub:")) else path
        model = open_clip.create_model(name, pretrained=pretrained, load_weights=path is not None)
        self.visual = model.visual
        self.layer = config.clip_layer

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # `clip_layer` indexes hidden states as transformers does: 0 is the embeddings, k the output of
        # block k-1, -1 the last block; so -2 is the penultimate block here too.
        num_blocks = len(self.visual.transformer.resblocks)
        block = num_blocks + self.layer if self.layer < 0 else self.layer - 1
        if not 0 <= block < num_blocks:
            raise ValueError(f"clip_layer {self.layer} does not name one of the {num_blocks} blocks")
        out = self.visual.forward_intermediates(
            pixel_values, indices=[block], stop_early=True, intermediates_only=True, output_fmt="NLC"
        )
        return out["image_intermediates"][0]  # [B, T, Dc]


_CLIP_TOWERS: dict[str, Callable[[SpatialGeoConfig, str | None], nn.Module]] = {
    "hf": HFCLIPTower,
    "open_clip": OpenCLIPTower,
}


def build_clip_tower(config: SpatialGeoConfig, path: str | None) -> nn.Module:
    if config.clip_backend not in _CLIP_TOWERS:
        raise ValueError(f"unknown CLIP backend {config.clip_backend!r}; known: {sorted(_CLIP_TOWERS)}")
    return _CLIP_TOWERS[config.clip_backend](config, path)


def load_moge_backbone(path: str | Path) -> nn.Module:
    """The DINOv2 backbone of a MoGe v1 or v2 checkpoint, loaded through moge's own `from_pretrained`."""
    from moge.model import import_model_class_by_version

    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    # v2 checkpoints describe the encoder as a dict; v1 name the backbone with a string.
    version = "v2" if isinstance(checkpoint["model_config"].get("encoder"), dict) else "v1"
    del checkpoint
    model = import_model_class_by_version(version).from_pretrained(str(path))
    return model.encoder.backbone if version == "v2" else model.backbone


class MoGeTower(nn.Module):
    """The last `num_layers` blocks of MoGe's DINOv2 backbone, normed, without CLS: [B, L, T, Dm]."""

    def __init__(self, config: SpatialGeoConfig, path: str | None):
        super().__init__()
        if path is None:  # meta-device construction for parameter counting
            from moge.model.dinov2.hub import backbones

            self.backbone = getattr(backbones, config.moge_backbone)(pretrained=False)
        else:
            self.backbone = load_moge_backbone(path)
        self.num_layers = config.moge_layers
        self.renormalise = config.moge_input == "moge"
        if self.renormalise:
            from .processing import CLIP_MEAN, CLIP_STD

            self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("moge_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("moge_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.to(next(self.backbone.parameters()).dtype)
        if self.renormalise:
            x = ((x * self.clip_std + self.clip_mean) - self.moge_mean) / self.moge_std
        blocks = self.backbone.get_intermediate_layers(x, n=self.num_layers, norm=True)
        return torch.stack(blocks, dim=1)  # [B, L, T, Dm]


class VisionTowers(nn.Module):
    """Both frozen towers; `forward` is the one road from pixels to what the feature store holds."""

    def __init__(self, config: SpatialGeoConfig, clip_path: str | None, moge_path: str | None):
        super().__init__()
        self.config = config
        self.clip = build_clip_tower(config, clip_path)
        self.moge = MoGeTower(config, moge_path)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: dropout and friends stay off whatever the caller asks

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.clip(pixel_values), self.moge(pixel_values)

    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels [B, 3, S, S] -> (clip [B, T, Dc], moge [B, L, T, Dm]): exactly what a feature store holds."""
        return self(pixel_values.to(self.device))
