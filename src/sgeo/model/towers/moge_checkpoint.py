"""Reading MoGe checkpoints: MoGe v1 / v2 files (`{"model_config", "model"}`) and bare DINOv2 state dicts (the
SpatialGeo release's vit_model.pt), never unpickling code, and building their DINOv2 backbone through `moge`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import SgeoError, one_line

# (width, depth) of the DINOv2 backbones that MoGe checkpoints name (`dinov2_vitl14`, ...).
DINOV2_GEOMETRY = {
    "dinov2_vits14": (384, 12),
    "dinov2_vitb14": (768, 12),
    "dinov2_vitl14": (1024, 24),
    "dinov2_vitg14": (1536, 40),
}
DINOV2_PATCH = 14


def read_checkpoint(path: str | Path) -> dict:
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
            f"{path} is not a readable MoGe checkpoint ({type(error).__name__}: {one_line(str(error), 200, first=True)}); "
            "replace it with the released file"
        ) from None
    if not isinstance(checkpoint, dict):
        raise SgeoError(
            f"{path} holds a {type(checkpoint).__name__}, not a MoGe checkpoint or DINOv2 state dict"
        )
    return checkpoint


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
    checkpoint = read_checkpoint(path)
    kind = _checkpoint_kind(checkpoint)
    if kind == "dinov2":
        return _dinov2_name(_strip_backbone_prefix(checkpoint), path)
    encoder = checkpoint["model_config"]["encoder"]
    return encoder["backbone"] if isinstance(encoder, dict) else encoder


def load_moge_backbone(path: str | Path) -> nn.Module:
    """The DINOv2 backbone of a MoGe v1 or v2 checkpoint (through moge's own `from_pretrained`), or of a bare
    DINOv2 state dict loaded into moge's DINOv2 as the SpatialGeo reference loads its vit_model.pt."""
    from moge.model import import_model_class_by_version

    checkpoint = read_checkpoint(path)
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
