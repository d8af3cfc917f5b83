"""SigLIP / SigLIP2 through transformers: one hidden state of the patch tokens: [B, T, D].

SigLIP has no CLS token: every token is a patch (27x27 = 729 for so400m-patch14-384). The hidden state is the
block's raw output, before `post_layernorm` and the pooling head, as LLaVA-OneVision (which deletes the last block
and reads `hidden_states[-1]`) and Prismatic (`get_intermediate_layers` of block len-2) read it: `-2` by default.

- `model_type: siglip` (google/siglip-*, and SigLIP2's fixed-resolution google/siglip2-*-patchP-S, whose
  config names `SiglipModel` too): `SiglipVisionModel`, fixed size (`vision_config.image_size`).
- `model_type: siglip2` (the NaFlex google/siglip2-*-naflex): `Siglip2VisionModel`, which reads flattened patches;
  here a square image of `sqrt(num_patches)` patches a side, patchified as `Siglip2ImageProcessor` does.
"""

from __future__ import annotations

import math

import torch

from ..pixel_stats import SIGLIP_MEAN, SIGLIP_STD
from ..tower_spec import TowerSpec
from .base import SharedPixels, Tower, block_indices
from .clip import read_json, vision_config_dict

# config.json's model_type (a full model's, or a vision model's) -> whether it is SigLIP2 NaFlex
MODEL_TYPES = {"siglip": False, "siglip_vision_model": False, "siglip2": True, "siglip2_vision_model": True}


def _naflex(model_type) -> bool:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"its config.json has model_type {model_type!r}, not one of {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def _classes(naflex: bool):
    if naflex:
        from transformers import Siglip2VisionConfig, Siglip2VisionModel

        return Siglip2VisionConfig, Siglip2VisionModel
    from transformers import SiglipVisionConfig, SiglipVisionModel

    return SiglipVisionConfig, SiglipVisionModel


def patchify(pixel_values: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C]: rows of patches, each flattened (row, column, channel) as
    `Siglip2ImageProcessor`'s `convert_image_to_patches` does."""
    b, c, h, w = pixel_values.shape
    x = pixel_values.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class SigLIPTower(Tower):
    kind = "siglip"
    mean, std = SIGLIP_MEAN, SIGLIP_STD  # preprocessor_config.json: image_mean = image_std = 0.5

    def __init__(self, spec: TowerSpec, path: str | None, shared: SharedPixels):
        super().__init__(spec, shared)
        if path is None:
            options = dict(spec.options["vision_config"])
            self.naflex = _naflex(options.pop("model_type", "siglip_vision_model"))
            config_cls, model_cls = _classes(self.naflex)
            self.model = model_cls(config_cls(**options))
        else:
            self.naflex = _naflex(read_json(f"{path}/config.json").get("model_type"))
            _, model_cls = _classes(self.naflex)
            self.model = model_cls.from_pretrained(path, local_files_only=True)  # a full model's vision half
        vision = self.vision  # transformers 5.x: the model itself; 4.x: its `vision_model`
        (block,) = block_indices(spec.layers, len(vision.encoder.layers))
        # Only the blocks up to the one read; the post-norm and pooling head come after every block and are
        # never read (LLaVA-OneVision replaces the head with Identity), so they are not kept either.
        vision.encoder.layers = vision.encoder.layers[: block + 1]
        vision.post_layernorm = None
        vision.head = None

    @property
    def vision(self):
        return getattr(self.model, "vision_model", self.model)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        m = self.vision
        x = pixel_values.to(self.model.dtype)
        if not self.naflex:
            return m.encoder(inputs_embeds=m.embeddings(x)).last_hidden_state  # [B, T, D]
        from transformers.masking_utils import create_bidirectional_mask

        patch = m.config.patch_size
        patches = patchify(x, patch)
        grid = torch.tensor([[x.shape[2] // patch, x.shape[3] // patch]], device=x.device).expand(
            x.shape[0], 2
        )
        hidden = m.embeddings(patches, grid)
        # every patch is real (no padding): the mask Siglip2VisionModel builds from an all-ones pixel mask
        full = torch.ones(patches.shape[:2], dtype=torch.long, device=x.device)
        mask = create_bidirectional_mask(config=m.config, inputs_embeds=hidden, attention_mask=full)
        return m.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state

    @classmethod
    def describe(cls, path: str, layers=None) -> dict:
        naflex = _naflex(read_json(f"{path}/config.json").get("model_type"))
        config_cls, _ = _classes(naflex)
        vision = config_cls.from_pretrained(path)  # a full SiglipModel directory gives its vision_config
        if naflex:
            side = math.isqrt(vision.num_patches)
            if side * side != vision.num_patches:
                raise ValueError(f"num_patches {vision.num_patches} is not a square grid")
            image_size = side * vision.patch_size  # the position grid's own size
        else:
            image_size = vision.image_size
        return {
            "kind": cls.kind, "layers": -2 if layers is None else layers, "hidden_size": vision.hidden_size,
            "patch_size": vision.patch_size, "image_size": image_size,
            "options": {"vision_config": vision_config_dict(vision)},
        }  # fmt: skip
