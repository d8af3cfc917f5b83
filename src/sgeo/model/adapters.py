"""Adapters from a tower's features to the LLM's hidden size: `mlp2x_gelu` (LLaVA-1.5), `linear`, and their
`summed_` forms for several layers (one adapter per layer, outputs summed: SpatialGeo's MoGe adapter)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_ADAPTERS: dict[str, Callable[[int, int], nn.Module]] = {}


def register_adapter(name: str):
    def decorate(factory):
        _ADAPTERS[name] = factory
        return factory

    return decorate


@register_adapter("linear")
def _linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


@register_adapter("mlp2x_gelu")
def _mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Module:
    # Indices 0 and 2 match LLaVA's `mm_projector.{0,2}` keys, so reference checkpoints load by name.
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def adapter_types() -> list[str]:
    return sorted(_ADAPTERS)


def build_adapter(adapter_type: str, in_dim: int, out_dim: int) -> nn.Module:
    if adapter_type not in _ADAPTERS:
        raise ValueError(f"unknown adapter type {adapter_type!r}; known: {sorted(_ADAPTERS)}")
    return _ADAPTERS[adapter_type](in_dim, out_dim)


class HierarchicalAdapter(nn.Module):
    """One adapter per layer; the projected layers are summed into one token sequence."""

    def __init__(self, adapter_type: str, num_layers: int, in_dim: int, out_dim: int):
        super().__init__()
        self.adapters = nn.ModuleList(build_adapter(adapter_type, in_dim, out_dim) for _ in range(num_layers))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: [B, L, T, D] -> [B, T, H]
        if features.shape[1] != len(self.adapters):
            raise ValueError(
                f"features have {features.shape[1]} layers, the adapter expects {len(self.adapters)}"
            )
        return sum(adapter(features[:, i]) for i, adapter in enumerate(self.adapters))


def build_tower_adapter(spec, out_dim: int) -> nn.Module:
    """The adapter a `TowerSpec` names: one for a single layer, one per layer (summed) for several."""
    if spec.multi_layer:
        return HierarchicalAdapter(spec.adapter_layer_type, len(spec.layers), spec.hidden_size, out_dim)
    return build_adapter(spec.adapter, spec.hidden_size, out_dim)
