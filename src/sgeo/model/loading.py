"""Loading a resolved model: the whole model, the encoders alone, the processor alone, the config alone.

Each takes a preset name, a directory or a `ResolvedModel` (resolve once, pass the result along). Only
`load_model` and `load_encoders` read weights; `load_processor` and `load_config` read config files.
"""

from __future__ import annotations

from ..errors import SgeoError
from .load_context import quiet_loading, weights_errors
from .resolve import ResolvedModel, resolve_model


def load_config(model: str | ResolvedModel):
    """The model's `SpatialGeoConfig` without loading any weights (used by `info` and fingerprints)."""
    resolved_model = resolve_model(model)
    try:
        return resolved_model.config
    except (ValueError, OSError, KeyError, TypeError) as error:
        raise SgeoError(
            f"{resolved_model.directory}/config.json is not a valid model config ({error})"
        ) from None


def load_processor(model: str | ResolvedModel):
    """The model's processor alone: tokenizer and image preprocessing; no weight file is opened."""
    return resolve_model(model).processor()


def load_model(
    model: str | ResolvedModel,
    *,
    load_towers: bool = True,
    dtype=None,
    device: str | None = None,
    attn_implementation: str | None = None,
):
    """(model, processor) through the real loaders; the towers only when asked."""
    resolved_model = resolve_model(model)
    with quiet_loading(), weights_errors(f"the model {resolved_model.name}"):
        return _load_model(resolved_model, load_towers, dtype, device, attn_implementation)


def _load_model(resolved_model: ResolvedModel, load_towers: bool, dtype, device, attn_implementation):
    from .modeling import SpatialGeoForCausalLM

    config = load_config(resolved_model)
    if resolved_model.layout == "sgeo":
        if resolved_model.base is not None:  # composed: the LLM's weights where they are, the adapters here
            from .compose import load_composed

            spatialgeo = load_composed(resolved_model, dtype, attn_implementation)
        else:
            kwargs = {"dtype": dtype} if dtype is not None else {}
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            spatialgeo = SpatialGeoForCausalLM.from_pretrained(resolved_model.directory, **kwargs)
        from .saving import LORA_DIR

        lora_dir = resolved_model.directory / LORA_DIR
        if lora_dir.is_dir():
            from peft import PeftModel

            spatialgeo.language_model = PeftModel.from_pretrained(spatialgeo.language_model, lora_dir)
    else:
        from .reference import load_reference_model

        spatialgeo = load_reference_model(
            resolved_model, dtype=dtype, attn_implementation=attn_implementation
        )
    # The tower names a saved model carries: hub ids stay hub ids, local towers become absolute paths.
    spatialgeo.config.vision_towers = config.vision_towers
    processor = resolved_model.processor()
    # The processor's `<image>` id is what the merge looks for (LLaVA: just past its 32000-token vocabulary).
    spatialgeo.config.image_token_id = processor.image_token_id
    stop_at_end_of_turn(spatialgeo, processor)
    if device:
        spatialgeo.to(device)
    if load_towers:
        paths = {name: located.path for name, located in resolved_model.towers.items()}
        with weights_errors(f"the vision towers of {resolved_model.name} ({', '.join(paths.values())})"):
            spatialgeo.load_towers(paths)
    spatialgeo.eval()
    return spatialgeo, processor


def stop_at_end_of_turn(model, processor) -> None:
    """`generate` stops where the model's turn ends: the LLM's generation config gets the processor's stop ids
    (a chat template's end-of-turn token and generation_config.json's eos ids, which a fully saved composed
    model's own generation config no longer knows). A LLaVA model's `</s>` is left as it is."""
    from .generation import configured_eos_ids, end_of_answer_ids

    generation = getattr(model.language_model, "generation_config", None)
    if generation is None:
        return
    stops = end_of_answer_ids(model, processor)
    if set(stops) - set(configured_eos_ids(model)):
        generation.eos_token_id = stops


def load_encoders(model: str | ResolvedModel, *, dtype=None, device: str | None = None, names=None):
    """The frozen towers alone, without the LLM (e.g. Ray encoder actors): all of them, or those `names`. `encode_images` is the same road as `SpatialGeoForCausalLM.encode_images`."""
    from .towers.stack import VisionTowers

    resolved_model = resolve_model(model)
    names = list(resolved_model.towers) if names is None else list(names)
    paths = {name: resolved_model.towers[name].path for name in names}
    with quiet_loading(), weights_errors(f"the vision towers of {resolved_model.name}"):
        towers = VisionTowers(load_config(resolved_model).towers, paths)
    towers.to(device=device or "cpu", dtype=dtype)
    return towers
