"""Parameter counts per part, with empty (meta) weights: nothing is read or allocated."""

from __future__ import annotations

import torch
from accelerate import init_empty_weights

from .configuration import SpatialGeoConfig
from .stages import LoraSettings


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(config: SpatialGeoConfig, lora: LoraSettings | None = None) -> dict[str, int]:
    """Per part, the totals, and what trains in each stage (stage 2 with `lora`, default LoraSettings())."""
    from .modeling import SpatialGeoForCausalLM
    from .stages import configure_stage, stage_adapters
    from .towers.stack import VisionTowers

    # init_empty_weights (not torch.device("meta")): DINOv2 computes Python scalars while it builds.
    with init_empty_weights():
        model = SpatialGeoForCausalLM(config)
        towers = VisionTowers(config.towers, dict.fromkeys(config.tower_names))
    counts = {f"{name}_tower": _count(tower) for name, tower in towers.towers.items()}
    counts.update({f"{name}_adapter": _count(adapter) for name, adapter in model.adapters().items()})
    counts["llm"] = _count(model.language_model)
    counts["total"] = sum(counts.values())
    adapters = model.adapters()
    counts["trainable_stage1"] = sum(  # the first adapter too where it is not trained yet (a composed model)
        p.numel() for a in stage_adapters(config, 1) for p in adapters[a].parameters()
    )
    with init_empty_weights():
        configure_stage(model, 2, lora or LoraSettings())
    counts["trainable_stage2"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
