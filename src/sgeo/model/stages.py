"""What trains in each stage, decided in one place.

Stage 1: the MoGe adapter, and the CLIP adapter too where it has not been trained yet (a model composed from
an LLM and the towers: LLaVA-1.5's pretraining of its projector, on captions); from a LLaVA-1.5 start, whose
CLIP adapter is trained, the MoGe adapter only (SpatialGeo's stage 1). Stage 2: both adapters and the LLM
through LoRA. The towers never train. The model's config records which adapters have been trained
(`trained_adapters`), so stage 1 decides by itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

STAGES = (1, 2)


@dataclass(frozen=True)
class LoraSettings:
    """Stage 2's LoRA, the reference recipe's (r=128, alpha=256): the one home of these defaults."""

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05


def llm_linear_names(language_model: nn.Module) -> list[str]:
    """Every linear layer of the LLM except the output head (LLaVA's `find_all_linear_names`)."""
    from torch import nn

    names = {
        name.split(".")[-1]
        for name, module in language_model.named_modules()
        if isinstance(module, nn.Linear)
    }
    names.discard("lm_head")
    return sorted(names)


def apply_lora(model: nn.Module, settings: LoraSettings) -> None:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=llm_linear_names(model.language_model),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model.language_model = get_peft_model(model.language_model, config)


def configure_stage(model: nn.Module, stage: int, lora: LoraSettings | None = LoraSettings()) -> list[str]:
    """Freeze `model` for `stage` (adding LoRA in stage 2); returns the trainable parameter names."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage}")
    model.requires_grad_(False)
    if stage == 2:
        if lora is not None:
            apply_lora(model, lora)  # peft leaves only the LoRA matrices of the LLM trainable
        else:
            model.language_model.requires_grad_(True)
    adapters = model.adapters()
    for name in stage_adapters(model.config, stage):
        adapters[name].requires_grad_(True)
    if getattr(model, "towers", None) is not None:
        model.towers.requires_grad_(False)
    return trainable_names(model)


def stage_adapters(config, stage: int) -> list[str]:
    """The towers whose adapters `stage` trains: every one in stage 2; in stage 1 those of the towers after the
    first (SpatialGeo's MoGe: what LLaVA-1.5 lacks) and the first's where it is not trained yet."""
    names = config.tower_names
    if stage == 2:
        return names
    return [a for i, a in enumerate(names) if i > 0 or not config.adapter_trained(a)]


def trainable_names(model: nn.Module) -> list[str]:
    return sorted(name for name, p in model.named_parameters() if p.requires_grad)


def stage_record(stage: int, lora: LoraSettings | None) -> dict:
    """What a checkpoint saves about how it was trained."""
    return {"stage": stage, "lora": asdict(lora) if (lora and stage == 2) else None}
