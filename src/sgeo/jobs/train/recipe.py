"""The `sgeo train` options and the one place they become a run's `TrainSettings`: per-stage defaults of the
reference recipe and the global batch (per-device x ranks x accumulation), computed and checked once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sgeo.cli_options import MODEL_HELP, option
from sgeo.errors import SgeoError
from sgeo.model.stages import LoraSettings
from sgeo.precision import accepted, check_precision, default_precision

WARMUP_RATIO = 0.03
WEIGHT_DECAY = 0.0
BETAS = (0.9, 0.999)
EPS = 1e-8
TRAIN_PRECISIONS = accepted("bf16", "fp32")  # weights and DeepSpeed's mode; None: bf16 on GPU, fp32 on CPU


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The `sgeo train` options, as given (None: the stage's default): each field is one option, declared
    here only (`sgeo.cli_options` makes the command line from these fields, `TrainSettings` inherits them)."""

    stage: int = option(
        help="1: MoGe adapter (a composed model's CLIP adapter too); 2: both adapters + LoRA on the LLM"
    )
    data: Path = option(help="LLaVA-format training JSON")
    store: list[str] | str | None = option(  # feature stores, or directories of them (one store per tower)
        None,
        help="feature stores of the JSON's images: a directory of stores (one per tower, as `sgeo extract` "
        "writes them), or each store, repeated",
        type=list[str] | None,  # repeated on the command line; one str from Python
    )
    model: str = option("tiny", help=MODEL_HELP + " to start from")
    out: Path = option(help="output directory (HF format)")
    image_root: Path | None = option(None, help="image root, for --online")
    lr: float | None = option(None, help="learning rate (stage 1: 1e-3, stage 2: 2e-4)")
    adapter_lr: float | None = option(None, help="stage 2 adapter learning rate (2e-5)")
    batch_size: int | None = option(None, help="per-device batch size")
    grad_accum: int | None = option(None, help="gradient accumulation steps")
    global_batch: int | None = option(None, help="global batch (stage 1: 256, stage 2: 128)")
    epochs: float = 1.0
    max_steps: int | None = None
    model_max_length: int = 2048
    deepspeed: Path | None = option(None, help="DeepSpeed JSON config (default: shipped ZeRO-2)")
    zero: int = option(2, help="ZeRO stage of the shipped config (2 or 3)")
    save_every: int = option(500, help="checkpoint every N steps")
    seed: int = 42
    lora_r: int | None = option(
        None, help=f"LoRA rank of stage 2 (default {LoraSettings.r}); 0 fine-tunes the whole LLM"
    )
    lora_alpha: int | None = option(None, help=f"LoRA alpha (default {LoraSettings.alpha})")
    clip_drop: float = option(0.0, help="probability of zeroing an image's CLIP features (stage 2)")
    group_by_length: bool = option(False, help="length-grouped batches, as LLaVA")
    num_workers: int = option(1, help="data loader workers")
    attn: str | None = option(None, help="attention: sdpa, eager or flash_attention_2")
    merge_lora: bool = option(False, help="also write the LoRA-merged model")
    online: bool = option(False, help="encode pixels in the loop instead of reading the store")
    image_aspect_ratio: str | None = option(  # cached runs use the store's
        None, help="--online pixels: pad or crop (default: stage 1 crop, stage 2 pad, as LLaVA's scripts)"
    )
    skip_invalid: bool = option(False, help="train without the samples that cannot be trained")
    precision: str | None = option(  # None: bf16 on GPU (the reference's), fp32 on CPU
        None, help="bf16 (weights and DeepSpeed's bf16 mode) or fp32 (default: bf16 on GPU, fp32 on CPU)"
    )
    gradient_checkpointing: bool | None = option(  # None: auto (memory_plan.py); LLaVA's scripts: always on
        None,
        help="recompute the LLM's activations in backward (memory for time); default auto: on a GPU, off where "
        "a measured step fits (in micro-batches, same global batch), else on; on CPU on",
    )
    visual_branches: str | None = option(
        None,
        help="both (every tower's tokens) or one tower's name (SpatialGeo: clip or moge; any model: the towers "
        "`sgeo info` lists): an ablation that feeds the LLM that tower's tokens only (the others' are zeros), "
        "saved with the model (default: the model's own)",
    )


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


@dataclass(frozen=True, kw_only=True)
class TrainSettings(TrainConfig):
    """Every setting of a run, concrete. Saved as train_config.json and in every checkpoint.

    The options as given (inherited from TrainConfig), except those declared again below, whose value here is
    the one the run uses: paths absolute, per-stage defaults and the batch filled in. `image_aspect_ratio` is
    filled with what the run uses once the data is read."""

    data: str
    store: list[str] | None
    model: str
    out: str
    image_root: str | None
    deepspeed: str | None
    lr: float
    adapter_lr: float | None  # None in stage 1 (the adapters train at lr)
    batch_size: int
    grad_accum: int
    global_batch: int
    precision: str  # bf16: weights in bf16 and DeepSpeed's bf16 mode (fp32 master weights)
    # not options: the recipe's constants, and what the run derives from the options
    template: str
    weight_decay: float
    betas: tuple[float, float]
    warmup_ratio: float
    world_size: int
    lora: LoraSettings | None  # stage 2 with LoRA; None: stage 1, or the whole LLM trains
    device: str
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


def training_settings(
    config: TrainConfig, world_size: int, device: str, model_template: str = "vicuna_v1"
) -> TrainSettings:
    """The one place where per-stage defaults are applied and the global batch is computed and checked.
    `model_template`: the template the model speaks (its processor's), which stage 2 trains in."""
    recipe = STAGE_RECIPES[config.stage]
    batch_size, grad_accum, global_batch = resolve_batch(
        recipe, config.batch_size, config.grad_accum, config.global_batch, world_size
    )
    lr = config.lr if config.lr is not None else recipe.lr
    adapter_lr = config.adapter_lr if config.adapter_lr is not None else recipe.adapter_lr
    given = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    return TrainSettings(**given | dict(
        data=_absolute(config.data), store=store_list(config.store), model=str(config.model),
        out=_absolute(config.out), image_root=_absolute(config.image_root) if config.image_root else None,
        deepspeed=_absolute(config.deepspeed) if config.deepspeed else None,
        lr=lr, adapter_lr=adapter_lr if config.stage == 2 else None,
        batch_size=batch_size, grad_accum=grad_accum, global_batch=global_batch,
        precision=config.precision or default_precision(device, TRAIN_PRECISIONS),
        template=recipe.template or model_template, weight_decay=WEIGHT_DECAY, betas=BETAS,
        warmup_ratio=WARMUP_RATIO, world_size=world_size, lora=lora_settings(config), device=device,
    ))  # fmt: skip


def _absolute(path: Path | str) -> str:
    return str(Path(path).resolve())


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
    check_precision(config.precision, TRAIN_PRECISIONS)
    if config.attn not in (None, "sdpa", "eager", "flash_attention_2"):
        raise SgeoError(f"--attn must be sdpa, eager or flash_attention_2, got {config.attn}")


def store_list(store: list[str] | str | None) -> list[str] | None:
    """`--store` as given (one, several, or a directory of stores) -> a list, or None."""
    if store is None or isinstance(store, list):
        return store
    return [str(store)]
