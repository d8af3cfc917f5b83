"""`sgeo info` and `sgeo cache plan`: what a model is made of, computed without loading weights."""

from __future__ import annotations

from ..model.presets import load_config


def model_info(model: str) -> dict:
    from ..model.info import parameter_counts

    config = load_config(model)
    return {
        "model": model,
        "parameters": parameter_counts(config),
        "visual_tokens_per_image": config.num_image_tokens,
        "clip_features": [config.num_patches, config.clip_hidden_size],
        "moge_features": [config.moge_layers, config.num_patches, config.moge_hidden_size],
    }


def store_plan(model: str, images: int, dtype: str = "bf16") -> dict:
    from ..cache import plan_store_bytes

    config = load_config(model)
    return plan_store_bytes(
        images,
        (config.num_patches, config.clip_hidden_size),
        (config.moge_layers, config.num_patches, config.moge_hidden_size),
        dtype,
    )
