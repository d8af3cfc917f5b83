"""A language model's key/value cache as per-layer tensors, across transformers 4.x and 5.x: what continuous
batching needs to merge, pad and cut the caches of its rows."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F


def cache_kwarg(language_model) -> str:
    """transformers 5 names the cache argument `cache`; 4.x and early 5.x name it `past_key_values`."""
    parameters = inspect.signature(language_model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(keys [B, H, T, D], values)] per layer of a `DynamicCache`."""
    if hasattr(cache, "layers"):
        if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
            raise NotImplementedError("continuous batching needs full-attention layers (no sliding window)")
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers 4.x


def build_cache(layers: list[tuple[torch.Tensor, torch.Tensor]], config):
    from transformers import DynamicCache

    try:
        return DynamicCache(ddp_cache_data=layers, config=config)
    except TypeError:  # transformers 4.x
        return DynamicCache.from_legacy_cache(tuple(layers))


def left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`tensor` with zeros before its entries along `dim`, to `length`."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.ndim - 1 - dim % tensor.ndim) + [missing, 0]
    return F.pad(tensor, pad)
