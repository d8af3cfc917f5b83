"""`sgeo info` and `sgeo cache plan`: what a model is made of, computed without loading weights."""

from __future__ import annotations

from ..errors import SgeoError
from ..model import load_config


def _config_and_source(model: str):
    """The model's config and where its parts are; the reference preset's geometry when its files are absent
    (parameter counts need no weights; loading it still fails, naming what is missing), and a random-init
    preset's geometry whether or not it is written yet."""
    from ..model import resolve_model
    from ..model.presets import PRESETS

    preset = PRESETS.get(model)
    if preset is not None and preset.geometry is not None:  # counted without writing gigabytes first
        return preset.geometry()
    try:
        resolved = resolve_model(model)
    except SgeoError as missing:
        if model != "spatialgeo-7b":
            raise
        from ..model.reference import reference_7b_config

        return reference_7b_config(), f"not found on this machine ({missing})"
    return load_config(resolved), resolved.describe()


def model_info(model: str) -> dict:
    from ..model.info import parameter_counts

    config, source = _config_and_source(model)
    return {
        "model": model,
        "parameters": parameter_counts(config),
        "visual_tokens_per_image": config.num_image_tokens,
        "clip_features": [config.num_patches, config.clip_hidden_size],
        "moge_features": [config.moge_layers, config.num_patches, config.moge_hidden_size],
        "weights": source,
    }


def store_plan(model: str, images: int, dtype: str = "bf16") -> dict:
    from ..cache import plan_store_bytes

    config, _ = _config_and_source(model)
    return plan_store_bytes(
        images,
        (config.num_patches, config.clip_hidden_size),
        (config.moge_layers, config.num_patches, config.moge_hidden_size),
        dtype,
    )
