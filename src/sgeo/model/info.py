"""Parameter counts per part, with empty (meta) weights: nothing is read or allocated."""

from __future__ import annotations

import torch
from accelerate import init_empty_weights

from .configuration import SpatialGeoConfig
from .stages import LoraSettings

PARTS = ("clip_tower", "moge_tower", "clip_adapter", "moge_adapter", "llm")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(config: SpatialGeoConfig, lora: LoraSettings | None = None) -> dict[str, int]:
    """Per part, the totals, and what trains in each stage (stage 2 with `lora`, default LoraSettings())."""
    from .modeling import SpatialGeoForCausalLM
    from .stages import configure_stage, stage_adapters
    from .towers import VisionTowers

    # init_empty_weights (not torch.device("meta")): DINOv2 computes Python scalars while it builds.
    with init_empty_weights():
        model = SpatialGeoForCausalLM(config)
        towers = VisionTowers(config, None, None)
    counts = {
        "clip_tower": _count(towers.clip),
        "moge_tower": _count(towers.moge),
        "clip_adapter": _count(model.clip_adapter),
        "moge_adapter": _count(model.moge_adapter),
        "llm": _count(model.language_model),
    }
    counts["total"] = sum(counts[p] for p in PARTS)
    counts["trainable_stage1"] = sum(  # the CLIP adapter too where it is not trained yet (a composed model)
        p.numel() for a in stage_adapters(config, 1) for p in getattr(model, f"{a}_adapter").parameters()
    )
    with init_empty_weights():
        configure_stage(model, 2, lora or LoraSettings())
    counts["trainable_stage2"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
