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

from ..errors import SgeoError
from .configuration import DINOV2_GEOMETRY, SpatialGeoConfig

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


def clip_backends() -> list[str]:
    return sorted(_CLIP_TOWERS)


def build_clip_tower(config: SpatialGeoConfig, path: str | None) -> nn.Module:
    if config.clip_backend not in _CLIP_TOWERS:
        raise ValueError(f"unknown CLIP backend {config.clip_backend!r}; known: {sorted(_CLIP_TOWERS)}")
    return _CLIP_TOWERS[config.clip_backend](config, path)


def _read_checkpoint(path: str | Path) -> dict:
    """A .pt file as tensors and plain containers (never arbitrary pickles), memory-mapped."""
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # only zip-format files map; legacy ones load whole
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses pickled code; a cut file fails to unzip
        raise SgeoError(
            f"{path} is not a readable MoGe checkpoint ({type(error).__name__}: {_first_line(error)}); "
            "replace it with the released file"
        ) from None
    if not isinstance(checkpoint, dict):
        raise SgeoError(
            f"{path} holds a {type(checkpoint).__name__}, not a MoGe checkpoint or DINOv2 state dict"
        )
    return checkpoint


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


def _checkpoint_kind(checkpoint: dict) -> str:
    """ "v1" / "v2" (MoGe `{"model_config", "model"}` files) or "dinov2" (a bare backbone state dict, as the
    SpatialGeo release's vit_model.pt)."""
    if "model_config" in checkpoint and "model" in checkpoint:
        # v2 checkpoints describe the encoder as a dict; v1 name the backbone with a string.
        return "v2" if isinstance(checkpoint["model_config"].get("encoder"), dict) else "v1"
    if "patch_embed.proj.weight" in _strip_backbone_prefix(checkpoint):
        return "dinov2"
    raise SgeoError(
        "the MoGe checkpoint is neither a MoGe file ({'model_config', 'model'}) nor a DINOv2 state dict "
        f"(keys {sorted(checkpoint)[:3]})"
    )


def _strip_backbone_prefix(state: dict) -> dict:
    if state and all(isinstance(k, str) and k.startswith("backbone.") for k in state):
        return {k.removeprefix("backbone."): v for k, v in state.items()}
    return state


def _dinov2_name(state: dict, path) -> str:
    """The DINOv2 architecture of a bare state dict, from its width and depth."""
    width = int(state["patch_embed.proj.weight"].shape[0])
    depth = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1)
    for name, (known_width, known_depth) in DINOV2_GEOMETRY.items():
        if (width, depth) == (known_width, known_depth):
            return name
    raise SgeoError(
        f"{path} is a ViT of width {width} and depth {depth}, which is no DINOv2 that MoGe builds"
    )


def moge_backbone_name(path: str | Path) -> str:
    """The DINOv2 backbone a MoGe checkpoint (or bare DINOv2 state dict) holds, without building it."""
    checkpoint = _read_checkpoint(path)
    kind = _checkpoint_kind(checkpoint)
    if kind == "dinov2":
        return _dinov2_name(_strip_backbone_prefix(checkpoint), path)
    encoder = checkpoint["model_config"]["encoder"]
    return encoder["backbone"] if isinstance(encoder, dict) else encoder


def load_moge_backbone(path: str | Path) -> nn.Module:
    """The DINOv2 backbone of a MoGe v1 or v2 checkpoint (through moge's own `from_pretrained`), or of a bare
    DINOv2 state dict loaded into moge's DINOv2 as the SpatialGeo reference loads its vit_model.pt."""
    from moge.model import import_model_class_by_version

    checkpoint = _read_checkpoint(path)
    kind = _checkpoint_kind(checkpoint)
    if kind == "dinov2":
        from moge.model.dinov2.hub import backbones

        state = _strip_backbone_prefix(checkpoint)
        backbone = getattr(backbones, _dinov2_name(state, path))(pretrained=False)
        # The reference loads with strict=False; keys it would silently miss are an error here.
        missing = backbone.load_state_dict(state, strict=False).missing_keys
        if missing:
            raise SgeoError(f"{path} lacks DINOv2 weights {missing[:3]}; is it a complete vit_model.pt?")
        return backbone
    del checkpoint
    model = import_model_class_by_version(kind).from_pretrained(str(path))
    return model.encoder.backbone if kind == "v2" else model.backbone


class MoGeTower(nn.Module):
    """The last `num_layers` blocks of MoGe's DINOv2 backbone, normed, without CLS: [B, L, T, Dm]."""

    def __init__(self, config: SpatialGeoConfig, path: str | None):
        super().__init__()
        if path is None:  # meta-device construction for parameter counting
            from moge.model.dinov2.hub import backbones

            self.backbone = getattr(backbones, config.moge_backbone)(pretrained=False)
        else:
            self.backbone = load_moge_backbone(path)
            if self.backbone.embed_dim != config.moge_hidden_size:
                raise SgeoError(
                    f"{path} holds a DINOv2 of width {self.backbone.embed_dim}, but the model's MoGe adapters read "
                    f"{config.moge_backbone} ({config.moge_hidden_size}); use the MoGe checkpoint it was trained with"
                )
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
