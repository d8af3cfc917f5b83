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
        resolved_model = resolve_model(model)
    except SgeoError as missing:
        if model != "spatialgeo-7b":
            raise
        from ..model.reference import reference_7b_config

        return reference_7b_config(), f"not found on this machine ({missing})"
    return load_config(resolved_model), resolved_model.describe()


def model_info(model: str) -> dict:
    from ..model.parameter_counts import parameter_counts

    config, source = _config_and_source(model)
    return {
        "model": model,
        "parameters": parameter_counts(config),
        "visual_tokens_per_image": config.num_image_tokens,
        "features": {name: list(shape) for name, shape in config.feature_shapes.items()},
        "weights": source,
    }


def store_plan(model: str, images: int, dtype: str | None = None, gpus: int = 8) -> dict:
    """Per store encoding (or only `dtype`): bytes per image, total, and the read rate `gpus` GPUs need."""
    from ..cache import ENCODINGS, plan_store_bytes

    config, _ = _config_and_source(model)
    names = [dtype] if dtype is not None else list(ENCODINGS)
    shapes = config.feature_shapes
    plans = {name: plan_store_bytes(images, shapes, name, gpus=gpus) for name in names}
    return {"model": model, "images": images, "gpus": gpus, "encodings": plans}


def format_plan(plan: dict) -> str:
    """The plan as a table, one line per encoding, then the measured effect of each lossy one."""
    from ..cache import ENCODINGS, human_bytes

    lines = [
        f"{plan['model']}, {plan['images']:,} images; read rate for {plan['gpus']} GPUs at LLaVA-1.5's "
        "stage-1 pace (44 samples/s per 8 GPUs)",
        f"{'encoding':<11}{'bytes/image':>13}{'total':>12}{'read rate':>13}  what",
    ]
    notes = []
    for name, p in plan["encodings"].items():
        about = "~" if ENCODINGS[name].size_ratio != 1.0 else ""
        lines.append(
            f"{name:<11}{about + human_bytes(p['bytes_per_image']):>13}{about + human_bytes(p['total_bytes']):>12}"
            f"{human_bytes(p['read_bytes_per_s']) + '/s':>13}  {ENCODINGS[name].about}"
        )
        if p["measured"]:
            notes.append(f"{name}: {p['measured']}")
    return "\n".join(lines + notes)
