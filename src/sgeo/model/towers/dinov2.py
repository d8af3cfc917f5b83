"""DINOv2 through transformers (`Dinov2Model`, or `Dinov2WithRegistersModel`): chosen blocks, each normed with the
model's final `layernorm` (as DINOv2's `get_intermediate_layers(norm=True)` does), CLS and register tokens
dropped: [B, L, T, D]. Any image size that is a multiple of the patch (the position embeddings are interpolated).
"""

from __future__ import annotations

import torch
from torch import nn

from ..pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from ..tower_spec import TowerSpec, last_layers
from .base import SharedPixels, Tower, block_indices
from .clip import read_json, vision_config_dict

# config.json's model_type -> (config class, model class) in transformers
MODEL_TYPES = {
    "dinov2": ("Dinov2Config", "Dinov2Model"),
    "dinov2_with_registers": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel"),
}


def read_blocks(
    model: nn.Module, blocks: list[int], prefix_tokens: int, pixel_values: torch.Tensor, norm: bool = True
) -> torch.Tensor:
    """The outputs of `blocks` (0-based) of a transformers DINOv2 (`Dinov2Model`, `Dinov2Backbone`), each through
    its final `layernorm` where `norm`, the first `prefix_tokens` (CLS, registers) dropped: [B, L, T, D]. The
    blocks run as the library's encoder runs them (no attention mask: every token is an image patch), and none
    after the last one read."""
    hidden = model.embeddings(pixel_values.to(model.layernorm.weight.dtype))
    wanted, out = set(blocks), []
    for index, layer in enumerate(model.encoder.layer[: max(blocks) + 1]):
        hidden = layer(hidden)
        if index in wanted:
            out.append((model.layernorm(hidden) if norm else hidden)[:, prefix_tokens:])
    return torch.stack(out, dim=1)


def prefix_tokens(config) -> int:
    """CLS plus any register tokens: what precedes the patch tokens."""
    return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


def _classes(model_type: str):
    import transformers

    if model_type not in MODEL_TYPES:
        raise ValueError(f"its config.json has model_type {model_type!r}, not one of {sorted(MODEL_TYPES)}")
    config_name, model_name = MODEL_TYPES[model_type]
    return getattr(transformers, config_name), getattr(transformers, model_name)


class DINOv2Tower(Tower):
    kind = "dinov2"
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # facebook/dinov2-*'s BitImageProcessor statistics
    default_adapter = "summed_mlp2x_gelu"

    def __init__(self, spec: TowerSpec, path: str | None, shared: SharedPixels):
        super().__init__(spec, shared)
        if path is None:
            options = dict(spec.options["config"])
            config_cls, model_cls = _classes(options.pop("model_type", "dinov2"))
            self.model = model_cls(config_cls(**options))
        else:
            _, model_cls = _classes(read_json(f"{path}/config.json").get("model_type"))
            self.model = model_cls.from_pretrained(path, local_files_only=True)
        layers = self.model.encoder.layer
        self.blocks = block_indices(spec.layers, len(layers))
        # the blocks after the last one read would be computed and thrown away
        self.model.encoder.layer = layers[: max(self.blocks) + 1]
        self.prefix = prefix_tokens(self.model.config)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return read_blocks(self.model, self.blocks, self.prefix, pixel_values)

    @classmethod
    def describe(cls, path: str, layers=None) -> dict:
        config_cls, _ = _classes(read_json(f"{path}/config.json").get("model_type"))
        config = config_cls.from_pretrained(path)
        return {
            "kind": cls.kind, "layers": last_layers(4) if layers is None else layers,
            "hidden_size": config.hidden_size, "patch_size": config.patch_size,
            "options": {"config": vision_config_dict(config)},
        }  # fmt: skip
