"""The SpatialGeo model: towers, adapters, fusion, the PreTrainedModel, processor, templates and presets.

Knows nothing of Ray, Zarr or the CLI.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration import SpatialGeoConfig
from .conversation import IGNORE_INDEX, IMAGE_TOKEN, TEMPLATES, get_template, render
from .loading import load_config, load_encoders, load_model, load_processor
from .modeling import SpatialGeoForCausalLM
from .presets import PRESETS, resolve_model_dir, sgeo_home
from .processing import SpatialGeoProcessor
from .resolve import ResolvedModel, resolve_model
from .stages import LoraSettings, configure_stage

# Registered so that transformers' Auto* classes (and tokenizer/processor loading) recognise our directories.
AutoConfig.register(SpatialGeoConfig.model_type, SpatialGeoConfig, exist_ok=True)
AutoModelForCausalLM.register(SpatialGeoConfig, SpatialGeoForCausalLM, exist_ok=True)

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "PRESETS",
    "ResolvedModel",
    "TEMPLATES",
    "LoraSettings",
    "SpatialGeoConfig",
    "SpatialGeoForCausalLM",
    "SpatialGeoProcessor",
    "configure_stage",
    "get_template",
    "load_config",
    "load_encoders",
    "load_model",
    "load_processor",
    "render",
    "resolve_model",
    "resolve_model_dir",
    "sgeo_home",
]
