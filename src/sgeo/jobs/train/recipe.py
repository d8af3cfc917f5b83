"""The `sgeo train` options and the one place they are resolved: per-stage defaults of the reference recipe
and the global batch (per-device x ranks x accumulation), computed and checked once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sgeo.errors import SgeoError
from sgeo.model.stages import LoraSettings

WARMUP_RATIO = 0.03
WEIGHT_DECAY = 0.0
BETAS = (0.9, 0.999)
EPS = 1e-8
PRECISIONS = ("bf16", "fp32")  # weights and DeepSpeed's mode; None: bf16 on GPU, fp32 on CPU


@dataclass
class TrainConfig:
    """The `sgeo train` options, as given (None: the stage's default)."""

    stage: int
    data: Path
    out: Path
    store: list[str] | str | None = None  # feature stores, or directories of them (one store per tower)
    model: str = "tiny"
    image_root: Path | None = None
    lr: float | None = None
    adapter_lr: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    global_batch: int | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    model_max_length: int = 2048
    deepspeed: Path | None = None
    zero: int = 2
    save_every: int = 500
    seed: int = 42
    lora_r: int | None = None  # None: LoraSettings' rank; 0 fine-tunes the whole LLM in stage 2
    lora_alpha: int | None = None  # None: LoraSettings' alpha
    clip_drop: float = 0.0
    group_by_length: bool = False
    num_workers: int = 1
    attn: str | None = None
    merge_lora: bool = False
    online: bool = False
    skip_invalid: bool = False
    image_aspect_ratio: str | None = None  # online pixels (None: the stage's); cached runs use the store's
    precision: str | None = None  # bf16 | fp32; None: bf16 on GPU (the reference's), fp32 on CPU
    gradient_checkpointing: bool = True  # LLaVA's scripts: a 7B LLM's activations at batch 16 need it
    visual_branches: str | None = None  # clip | moge: train (and save) an ablation; None: the model's


@dataclass(frozen=True)
class StageRecipe:
    template: str | None  # None: the model's own (processor_config.json's; vicuna_v1 for LLaVA-1.5 models)
    image_aspect_ratio: str  # online pixels: LLaVA's pretrain script uses CLIP's crop, finetuning pads
    lr: float
    adapter_lr: float | None  # None: the adapters train at `lr`
    global_batch: int
    per_device_batch: int  # the reference's per-GPU batch; accumulation makes up the rest


STAGE_RECIPES = {
    1: StageRecipe(
        template="plain",
        image_aspect_ratio="crop",
        lr=1e-3,
        adapter_lr=None,
        global_batch=256,
        per_device_batch=32,
    ),
    2: StageRecipe(
        template=None,
        image_aspect_ratio="pad",
        lr=2e-4,
        adapter_lr=2e-5,
        global_batch=128,
        per_device_batch=16,
    ),
}


@dataclass(frozen=True)
class Resolved:
    """Every setting of a run, concrete. Saved as train_config.json and in every checkpoint."""

    stage: int
    data: str
    store: list[str] | None
    model: str
    out: str
    online: bool
    image_root: str | None
    template: str
    lr: float
    adapter_lr: float | None
    weight_decay: float
    betas: tuple[float, float]
    warmup_ratio: float
    batch_size: int
    grad_accum: int
    world_size: int
    global_batch: int
    epochs: float
    max_steps: int | None
    model_max_length: int
    zero: int
    deepspeed: str | None
    save_every: int
    seed: int
    lora: LoraSettings | None  # stage 2 with LoRA; None: stage 1, or the whole LLM trains
    clip_drop: float
    group_by_length: bool
    num_workers: int
    attn: str | None
    merge_lora: bool
    device: str
    skip_invalid: bool = False
    image_aspect_ratio: str | None = None  # as given; then filled with what the run uses
    precision: str = "fp32"  # bf16: weights in bf16 and DeepSpeed's bf16 mode (fp32 master weights)
    gradient_checkpointing: bool = True  # recompute the LLM's activations in backward (same numbers)
    visual_branches: str | None = None  # set on the model before training (an ablation); None: keep
    # filled once the model and the data are read
    model_parts: dict | None = None
    num_samples: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    warmup_steps: int = 0


def resolve_batch(recipe: StageRecipe, batch_size: int | None, grad_accum: int | None, global_batch: int | None,
                  world_size: int) -> tuple[int, int, int]:  # fmt: skip
    """(per-device batch, accumulation, global batch) with global = per-device x world size x accumulation."""
    for name, value in (
        ("--batch-size", batch_size),
        ("--grad-accum", grad_accum),
        ("--global-batch", global_batch),
    ):
        if value is not None and value < 1:
            raise SgeoError(f"{name} must be a positive integer, got {value}")
    if batch_size is not None and grad_accum is not None:
        derived = batch_size * world_size * grad_accum
        if global_batch is not None and global_batch != derived:
            raise SgeoError(
                f"--global-batch {global_batch} != per-device {batch_size} x {world_size} ranks x accumulation "
                f"{grad_accum} = {derived}; drop one of the three options"
            )
        return batch_size, grad_accum, derived
    target = global_batch or recipe.global_batch
    if batch_size is None and grad_accum is None:
        batch_size = min(recipe.per_device_batch, max(1, target // world_size))
    if batch_size is None:
        batch_size, rest = divmod(target, world_size * grad_accum)
        what = f"{world_size} ranks x accumulation {grad_accum}"
    else:
        grad_accum, rest = divmod(target, world_size * batch_size)
        what = f"per-device {batch_size} x {world_size} ranks"
    if rest or not batch_size or not grad_accum:
        raise SgeoError(
            f"global batch {target} is not divisible by {what}; the global batch is per-device x ranks x "
            "accumulation, so pick --batch-size, --grad-accum or --global-batch that divide"
        )
    return batch_size, grad_accum, target


def lora_settings(config: TrainConfig) -> LoraSettings | None:
    """Stage 2's LoRA (LoraSettings' defaults for what is not given); None in stage 1 and with --lora-r 0,
    which fine-tunes the whole LLM instead."""
    if config.stage != 2 or config.lora_r == 0:
        return None
    given = {"r": config.lora_r, "alpha": config.lora_alpha}
    return LoraSettings(**{k: v for k, v in given.items() if v is not None})


def resolve(config: TrainConfig, world_size: int, device: str, model_template: str = "vicuna_v1") -> Resolved:
    """The one place where per-stage defaults are applied and the global batch is computed and checked.
    `model_template`: the template the model speaks (its processor's), which stage 2 trains in."""
    recipe = STAGE_RECIPES[config.stage]
    batch_size, grad_accum, global_batch = resolve_batch(
        recipe, config.batch_size, config.grad_accum, config.global_batch, world_size
    )
    lr = config.lr if config.lr is not None else recipe.lr
    adapter_lr = config.adapter_lr if config.adapter_lr is not None else recipe.adapter_lr
    return Resolved(
        stage=config.stage, data=str(Path(config.data).resolve()), store=store_list(config.store), model=str(config.model),
        out=str(Path(config.out).resolve()), online=config.online,
        image_root=str(Path(config.image_root).resolve()) if config.image_root else None,
        template=recipe.template or model_template, lr=lr, adapter_lr=adapter_lr if config.stage == 2 else None,
        weight_decay=WEIGHT_DECAY, betas=BETAS, warmup_ratio=WARMUP_RATIO,
        batch_size=batch_size, grad_accum=grad_accum, world_size=world_size, global_batch=global_batch,
        epochs=config.epochs, max_steps=config.max_steps, model_max_length=config.model_max_length,
        zero=config.zero, deepspeed=str(Path(config.deepspeed).resolve()) if config.deepspeed else None,
        save_every=config.save_every, seed=config.seed,
        lora=lora_settings(config),
        clip_drop=config.clip_drop, group_by_length=config.group_by_length, num_workers=config.num_workers,
        attn=config.attn, merge_lora=config.merge_lora, device=device, skip_invalid=config.skip_invalid,
        image_aspect_ratio=config.image_aspect_ratio,
        precision=config.precision or ("bf16" if device == "cuda" else "fp32"),
        gradient_checkpointing=config.gradient_checkpointing, visual_branches=config.visual_branches,
    )  # fmt: skip


def check_config(config: TrainConfig) -> None:
    """User errors that need no model, data or engine: one line each."""
    import math

    if config.stage not in STAGE_RECIPES:
        raise SgeoError(f"--stage must be 1 or 2, got {config.stage}")
    if not Path(config.data).is_file():
        raise SgeoError(f"training JSON not found: {config.data}; pass --data with a LLaVA-format JSON file")
    if Path(config.out).exists() and not Path(config.out).is_dir():
        raise SgeoError(f"--out {config.out} is a file; give a directory for the trained model")
    for store in store_list(config.store) or ():
        if "://" not in store and Path(store).is_file():
            raise SgeoError(f"--store {store} is a file, not a feature store; give the store's directory")
    for name in ("lr", "adapter_lr"):
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SgeoError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if config.model_max_length < 1:
        raise SgeoError(f"--model-max-length must be positive, got {config.model_max_length}")
    r = LoraSettings.r if config.lora_r is None else config.lora_r
    alpha = LoraSettings.alpha if config.lora_alpha is None else config.lora_alpha
    if r < 0 or (r > 0 and alpha <= 0):
        raise SgeoError(
            f"--lora-r must be 0 (fine-tune the whole LLM) or positive with a positive --lora-alpha, got "
            f"r={r}, alpha={alpha}"
        )
    if config.online:
        if config.image_root is None or not Path(config.image_root).is_dir():
            raise SgeoError(
                f"--online reads pixels: pass --image-root with the images' folder (got {config.image_root})"
            )
    elif config.store is None:
        raise SgeoError(
            "--store is required (the feature store of the JSON's images), or pass --online --image-root"
        )
    if config.deepspeed is not None and not Path(config.deepspeed).is_file():
        raise SgeoError(f"DeepSpeed config not found: {config.deepspeed}")
    if config.zero not in (2, 3):
        raise SgeoError(f"--zero must be 2 or 3, got {config.zero}")
    if not 0.0 <= config.clip_drop < 1.0:
        raise SgeoError(f"--clip-drop must be in [0, 1), got {config.clip_drop}")
    if config.clip_drop and config.stage != 2:
        raise SgeoError("--clip-drop is a stage-2 option (the CLIP adapter is frozen in stage 1)")
    if config.merge_lora and config.stage != 2:
        raise SgeoError("--merge-lora applies to stage 2 (stage 1 has no LoRA)")
    if config.adapter_lr is not None and config.stage != 2:
        raise SgeoError("--adapter-lr is a stage-2 option (stage 1 trains only the adapters, at --lr)")
    if config.max_steps is not None and config.max_steps < 1:
        raise SgeoError(f"--max-steps must be positive, got {config.max_steps}")
    if not (math.isfinite(config.epochs) and config.epochs > 0):  # nan and inf would fail deep inside
        raise SgeoError(f"--epochs must be a positive finite number, got {config.epochs}")
    if config.save_every < 1:
        raise SgeoError(f"--save-every must be positive, got {config.save_every}")
    if config.num_workers < 0:
        raise SgeoError(f"--num-workers must be >= 0, got {config.num_workers}")
    if config.image_aspect_ratio not in (None, "pad", "crop"):
        raise SgeoError(f"--image-aspect-ratio must be pad or crop, got {config.image_aspect_ratio}")
    if config.precision not in (None, *PRECISIONS):
        raise SgeoError(f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision}")
    if config.attn not in (None, "sdpa", "eager", "flash_attention_2"):
        raise SgeoError(f"--attn must be sdpa, eager or flash_attention_2, got {config.attn}")


def store_list(store: list[str] | str | None) -> list[str] | None:
    """`--store` as given (one, several, or a directory of stores) -> a list, or None."""
    if store is None or isinstance(store, list):
        return store
    return [str(store)]
