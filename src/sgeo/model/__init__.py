"""The SpatialGeo model: towers, adapters, fusion, the PreTrainedModel, processor, templates and presets.

Knows nothing of Ray, Zarr or the CLI. Names load lazily, so `sgeo.model.conversation` (templates, the image
token) costs no import of transformers or torch to the commands that only read text.
"""

from __future__ import annotations

import importlib

# What callers import from the package itself (everything else from its module)
_EXPORTS = {
    "IGNORE_INDEX": ".conversation", "render": ".conversation", "SpatialGeoConfig": ".configuration",
    "SpatialGeoForCausalLM": ".modeling", "SpatialGeoProcessor": ".processing", "LoraSettings": ".stages",
    "configure_stage": ".stages", "load_config": ".loading", "load_encoders": ".loading", "load_model": ".loading",
    "load_processor": ".loading", "resolve_model": ".resolve",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
