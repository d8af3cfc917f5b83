"""`sgeo train`: stage 1 or 2 of SpatialGeo on DeepSpeed, from the feature store (or pixels with --online).

One flat recipe, read top to bottom: `resolve` (the per-stage defaults and the global batch, decided once),
`setup` (environment, data, model, engine), `load_checkpoint`, `train`, `save_checkpoint`, `save_outputs`,
`cleanup`. What trains is decided by `sgeo.model.configure_stage`; the vision towers are never constructed
when training from the store.

Resuming: every checkpoint (`out/checkpoints/step-NNNNNNN`, DeepSpeed format, trainable tensors and
optimizer states) carries the step and the resolved recipe; the data order of epoch e depends only on
(seed, e), and every source of randomness in a step is reseeded from (seed, step, micro-batch, rank). So
rerunning a killed command continues from the latest checkpoint and ends with the weights an
uninterrupted run would have.

Output directory (HF format, `load_model(out)` works): config + weights + processor, `lora/` (stage 2),
`merged/` (--merge-lora), `trainable.json`, `train_config.json`, `metrics.jsonl`, `loss.png`, `checkpoints/`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
KEEP_CHECKPOINTS = 2
WARMUP_RATIO = 0.03
WEIGHT_DECAY = 0.0
BETAS = (0.9, 0.999)
EPS = 1e-8
LORA_DROPOUT = 0.05
# Options a rerun may change without changing what it computes (everything else must match to resume).
RESUME_FREE = ("out", "save_every", "num_workers", "merge_lora", "attn")
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class TrainConfig:
    """The `sgeo train` options, as given (None: the stage's default)."""

    stage: int
    data: Path
    out: Path
    store: str | None = None
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
    lora_r: int = 128
    lora_alpha: int = 256
    clip_drop: float = 0.0
    group_by_length: bool = False
    num_workers: int = 1
    attn: str | None = None
    merge_lora: bool = False
    online: bool = False


@dataclass(frozen=True)
class StageRecipe:
    template: str
    lr: float
    adapter_lr: float | None  # None: the adapters train at `lr`
    global_batch: int
    per_device_batch: int  # the reference's per-GPU batch; accumulation makes up the rest


STAGE_RECIPES = {
    1: StageRecipe(template="plain", lr=1e-3, adapter_lr=None, global_batch=256, per_device_batch=32),
    2: StageRecipe(template="vicuna_v1", lr=2e-4, adapter_lr=2e-5, global_batch=128, per_device_batch=16),
}


@dataclass(frozen=True)
class Resolved:
    """Every setting of a run, concrete. Saved as train_config.json and in every checkpoint."""

    stage: int
    data: str
    store: str | None
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
    lora: dict | None
    clip_drop: float
    group_by_length: bool
    num_workers: int
    attn: str | None
    merge_lora: bool
    device: str
    # filled once the data is joined
    num_samples: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    warmup_steps: int = 0


# -- resolving -------------------------------------------------------------------------------------
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


def resolve(config: TrainConfig, world_size: int, device: str) -> Resolved:
    """The one place where per-stage defaults are applied and the global batch is computed and checked."""
    recipe = STAGE_RECIPES[config.stage]
    batch_size, grad_accum, global_batch = resolve_batch(
        recipe, config.batch_size, config.grad_accum, config.global_batch, world_size
    )
    lr = config.lr if config.lr is not None else recipe.lr
    adapter_lr = config.adapter_lr if config.adapter_lr is not None else recipe.adapter_lr
    return Resolved(
        stage=config.stage, data=str(Path(config.data).resolve()), store=config.store, model=str(config.model),
        out=str(Path(config.out).resolve()), online=config.online,
        image_root=str(Path(config.image_root).resolve()) if config.image_root else None,
        template=recipe.template, lr=lr, adapter_lr=adapter_lr if config.stage == 2 else None,
        weight_decay=WEIGHT_DECAY, betas=BETAS, warmup_ratio=WARMUP_RATIO,
        batch_size=batch_size, grad_accum=grad_accum, world_size=world_size, global_batch=global_batch,
        epochs=config.epochs, max_steps=config.max_steps, model_max_length=config.model_max_length,
        zero=config.zero, deepspeed=str(Path(config.deepspeed).resolve()) if config.deepspeed else None,
        save_every=config.save_every, seed=config.seed,
        # lora_r 0 in stage 2 fine-tunes the whole LLM instead of LoRA (what the tiny model needs to learn).
        lora={"r": config.lora_r, "alpha": config.lora_alpha, "dropout": LORA_DROPOUT}
        if config.stage == 2 and config.lora_r > 0 else None,
        clip_drop=config.clip_drop, group_by_length=config.group_by_length, num_workers=config.num_workers,
        attn=config.attn, merge_lora=config.merge_lora, device=device,
    )  # fmt: skip


def check_config(config: TrainConfig) -> None:
    """User errors that need no model, data or engine: one line each."""
    if config.stage not in STAGE_RECIPES:
        raise SgeoError(f"--stage must be 1 or 2, got {config.stage}")
    if not Path(config.data).is_file():
        raise SgeoError(f"training JSON not found: {config.data}; pass --data with a LLaVA-format JSON file")
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
        raise SgeoError("--adapter-lr is a stage-2 option (stage 1 trains only the MoGe adapter, at --lr)")
    if config.max_steps is not None and config.max_steps < 1:
        raise SgeoError(f"--max-steps must be positive, got {config.max_steps}")
    if config.max_steps is None and config.epochs <= 0:
        raise SgeoError(f"--epochs must be positive, got {config.epochs}")
    if config.save_every < 1:
        raise SgeoError(f"--save-every must be positive, got {config.save_every}")
    if config.num_workers < 0:
        raise SgeoError(f"--num-workers must be >= 0, got {config.num_workers}")
    if config.attn not in (None, "sdpa", "eager", "flash_attention_2"):
        raise SgeoError(f"--attn must be sdpa, eager or flash_attention_2, got {config.attn}")


# -- environment and logging -----------------------------------------------------------------------
def prepare_environment() -> tuple[str, bool]:
    """(device type, launched): the CPU accelerator and a single-rank environment when nobody launched us."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if not launched:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))  # fmt: skip
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    return ("cuda" if cuda else "cpu"), launched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message: str) -> None:
    """The one logging helper: rank 0 only, above the progress bar."""
    if int(os.environ.get("RANK", "0")) == 0:
        from tqdm import tqdm

        tqdm.write(f"[sgeo train] {message}", file=sys.stderr)


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything `train` needs, built by `setup`."""

    resolved: Resolved
    rank: int
    world_size: int
    device: Any  # torch.device
    engine: Any  # deepspeed.DeepSpeedEngine
    model: Any  # SpatialGeoForCausalLM (engine.module)
    processor: Any
    dataset: Any
    collator: Any
    plan: Any
    trainable: list[str]
    owns_process_group: bool
    features: Any = None  # the FeatureStore (None online)
    threads_before: int | None = None  # torch threads before setup (CPU), restored by cleanup
    step: int = 0
    metrics: list[dict] = dataclasses.field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.resolved.out)

    @property
    def checkpoints(self) -> Path:
        return self.out / CHECKPOINTS


def setup(config: TrainConfig, features=None) -> Run:
    """Environment, data, model and DeepSpeed engine; user errors surface before any of them is built.

    features: instead of opening `config.store`, read features from this object (FeatureStore's
    `read`/`manifest`/`fingerprint`/`dtype` API; tests use an in-memory one).
    """
    check_config(config)
    device_type, _ = prepare_environment()
    import torch

    from sgeo.pipeline.training_data import BatchPlan, Collator, TrainingDataset

    world_size = int(os.environ["WORLD_SIZE"])
    resolved = resolve(config, world_size, device_type)
    if device_type == "cpu" and resolved.attn == "flash_attention_2":
        raise SgeoError("--attn flash_attention_2 needs a GPU (and the gpu extra); use sdpa on CPU")
    _check_resumable(resolved)

    # data: JSON samples joined to store rows (the store's fingerprint must match the model's encoders)
    if features is None and resolved.store is not None:
        from sgeo.cache import FeatureStore

        features = FeatureStore.open(resolved.store)
    dtype = torch.bfloat16 if device_type == "cuda" else torch.float32
    processor, model_config, model = _processor_and_config(resolved, dtype)
    if features is not None and not resolved.online:  # online, the store only picks the samples
        check_features(features, model_config, processor)
    processor.model_max_length = resolved.model_max_length
    join = _join(resolved, features)
    log(f"data {resolved.data}: {join.summary()}")
    dataset = TrainingDataset(
        join, processor, resolved.template, resolved.image_root if resolved.online else None
    )
    plan = BatchPlan(len(dataset), resolved.batch_size, world_size, resolved.grad_accum, resolved.seed,
                     lengths=tuple(dataset.lengths()) if resolved.group_by_length else None,
                     has_image=tuple(dataset.has_image()))  # fmt: skip
    if plan.steps_per_epoch == 0:
        raise SgeoError(
            f"{len(dataset)} usable samples do not fill one step of global batch {resolved.global_batch}; "
            "lower --global-batch (or --batch-size / --grad-accum)"
        )
    total = resolved.max_steps or math.ceil(resolved.epochs * plan.steps_per_epoch)
    resolved = dataclasses.replace(
        resolved, num_samples=len(dataset), steps_per_epoch=plan.steps_per_epoch, total_steps=total,
        warmup_steps=math.ceil(WARMUP_RATIO * total),
    )  # fmt: skip
    log(
        f"stage {resolved.stage}: global batch {resolved.global_batch} = {resolved.batch_size} per device x "
        f"{world_size} ranks x {resolved.grad_accum} accumulation; {total} steps "
        f"({plan.steps_per_epoch} per epoch, {plan.samples_per_epoch} of {len(dataset)} samples per epoch)"
    )

    # model: the towers only online; stage 2 starts from a model without LoRA
    from sgeo.model import LoraSettings, configure_stage
    from sgeo.model.saving import has_lora

    if model is None:
        model = _load_start(resolved, dtype)[0]
    if has_lora(model):
        raise SgeoError(
            f"--model {resolved.model} already carries a LoRA adapter; start stage {resolved.stage} from a model "
            "without one (a stage-1 output, or the merged/ dir of a stage-2 output)"
        )
    torch.manual_seed(resolved.seed)  # LoRA's initialisation
    lora = LoraSettings(**resolved.lora) if resolved.lora else None
    trainable = configure_stage(model, resolved.stage, lora)
    model.train()

    # engine
    import deepspeed
    import torch.distributed as dist

    _quiet_deepspeed()
    owns_process_group = not dist.is_initialized()
    deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo", verbose=False)
    threads = None
    try:
        rank = dist.get_rank()
        if device_type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
            threads = _cpu_threads(resolved.num_workers)
        ds_config = deepspeed_config(resolved, model.config)
        schedule = None if "scheduler" in ds_config else partial(cosine_schedule, warmup=resolved.warmup_steps,
                                                                    total=resolved.total_steps)  # fmt: skip
        engine, *_ = deepspeed.initialize(model=model, model_parameters=_param_groups(model, resolved),
                                          config=ds_config, lr_scheduler=schedule)  # fmt: skip
    except BaseException:
        if threads is not None:
            torch.set_num_threads(threads)
        if owns_process_group and dist.is_initialized():
            deepspeed.comm.destroy_process_group()
        raise
    config_ = model.config
    run = Run(
        resolved=resolved, rank=rank, world_size=world_size, device=device, engine=engine, model=engine.module,
        processor=processor, dataset=dataset, plan=plan, trainable=trainable,
        collator=Collator(processor, None if resolved.online else features,
                          (config_.num_patches, config_.clip_hidden_size),
                          (config_.moge_layers, config_.num_patches, config_.moge_hidden_size)),
        owns_process_group=owns_process_group, features=features, threads_before=threads,
    )  # fmt: skip
    if rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        _write_json(run.out / "train_config.json", asdict(resolved))
    return run


def _load_start(resolved: Resolved, dtype):
    """(model, processor) of the starting model: the towers only online."""
    from sgeo.model import load_model

    return load_model(
        resolved.model, load_towers=resolved.online, dtype=dtype, attn_implementation=resolved.attn
    )


def _processor_and_config(resolved: Resolved, dtype):
    """(processor, config, model or None) of the starting model: from its directory without loading weights
    where it has one (so a wrong store is refused at once), else by loading it (kept for training)."""
    from sgeo.model import SpatialGeoProcessor, load_config
    from sgeo.model.presets import resolve_model_dir
    from sgeo.model.processing import PROCESSOR_FILE

    directory = resolve_model_dir(resolved.model)  # None for a preset assembled at load (spatialgeo-7b)
    if directory is not None and (directory / PROCESSOR_FILE).is_file():
        return SpatialGeoProcessor.from_pretrained(directory), load_config(resolved.model), None
    model, processor = _load_start(resolved, dtype)
    return processor, model.config, model


def _cpu_threads(num_workers: int) -> int | None:
    """On CPU, leave one core per loader worker (oversubscribed OpenMP threads spin and stall every op);
    an explicit OMP_NUM_THREADS wins. Returns the previous thread count, to restore at cleanup."""
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, cores - num_workers))
    return previous


def _quiet_deepspeed() -> None:
    import logging

    from deepspeed.utils import logger

    logger.setLevel(logging.WARNING)


def check_features(features, model_config, processor) -> None:
    """Refuse a store made by other encoders or preprocessing; its storage dtype is its own business."""
    from sgeo.cache import check_fingerprint
    from sgeo.model.fingerprint import encoder_fingerprint

    expected = encoder_fingerprint(
        model_config, processor.preprocessing_spec(), features.fingerprint.get("dtype")
    )
    check_fingerprint(getattr(features, "url", "(in memory)"), features.fingerprint, expected)


def _join(resolved: Resolved, features):
    from sgeo.pipeline.images import PathEscapeError, resolve_inside
    from sgeo.pipeline.training_data import join_samples, load_samples, manifest_statuses

    samples = load_samples(resolved.data)
    statuses = manifest_statuses(features) if features is not None else None

    def exists(image_id: str) -> bool:
        try:
            return resolve_inside(resolved.image_root, image_id).is_file()
        except PathEscapeError:
            return False

    return join_samples(samples, statuses, needs_image=resolved.template == "plain",
                        exists=exists if resolved.online else None)  # fmt: skip


def _param_groups(model, resolved: Resolved) -> list[dict]:
    """Stage 2: the adapters at the adapter lr, the rest (LoRA) at lr. Stage 1: one group."""
    adapters = [
        p for m in (model.clip_adapter, model.moge_adapter) for p in m.parameters() if p.requires_grad
    ]
    ids = {id(p) for p in adapters}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    if resolved.adapter_lr is None:
        return [{"params": adapters + rest, "weight_decay": resolved.weight_decay}]
    return [
        {"params": rest, "weight_decay": resolved.weight_decay, "lr": resolved.lr},
        {"params": adapters, "weight_decay": resolved.weight_decay, "lr": resolved.adapter_lr},
    ]


def cosine_schedule(optimizer, warmup: int, total: int):
    """Linear warmup from 0, then cosine to 0, per param group (transformers' get_cosine_schedule_with_warmup).

    Used unless the DeepSpeed config names its own "scheduler" (DeepSpeed's WarmupCosineLR lags this by
    one step: its first two steps both run at lr 0)."""
    from torch.optim.lr_scheduler import LambdaLR

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return LambdaLR(optimizer, factor)


def deepspeed_config(resolved: Resolved, model_config) -> dict:
    """The shipped ZeRO-2/3 JSON (or --deepspeed's), with its "auto" values filled from the run."""
    if resolved.deepspeed:
        config = json.loads(Path(resolved.deepspeed).read_text())
        source = resolved.deepspeed
    else:
        source = f"sgeo/configs/zero{resolved.zero}.json"
        config = json.loads(resources.files("sgeo.configs").joinpath(f"zero{resolved.zero}.json").read_text())
    hidden = model_config.hidden_size
    config.setdefault("optimizer", {"type": "AdamW", "params": {}})
    # the run decides these: "auto" (or absent) is filled, any other value must agree
    decided = {
        "train_micro_batch_size_per_gpu": resolved.batch_size,
        "gradient_accumulation_steps": resolved.grad_accum,
        "train_batch_size": resolved.global_batch,
        "optimizer.params.lr": resolved.lr,
        "optimizer.params.betas": list(resolved.betas),
        "optimizer.params.eps": EPS,
        "optimizer.params.weight_decay": resolved.weight_decay,
    }
    if config.get("scheduler", {}).get("type") == "WarmupCosineLR":  # else `cosine_schedule` (no "scheduler")
        decided["scheduler.params.total_num_steps"] = resolved.total_steps
        decided["scheduler.params.warmup_num_steps"] = max(1, resolved.warmup_steps)
    filled = {  # "auto" only
        "bf16.enabled": resolved.device == "cuda",
        # On CPU, torch's AdamW: DeepSpeed's CPU FusedAdam keeps beta1^t, beta2^t as a running product in a
        # process-wide object, so a resumed run (pow instead of product) drifts from an uninterrupted one.
        "optimizer.params.torch_adam": resolved.device == "cpu",
        "fp16.enabled": False,
        "zero_optimization.reduce_bucket_size": hidden * hidden,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden,
        "gradient_clipping": 1.0,
    }
    for key, value in decided.items():
        have = _get(config, key)
        if have in (None, "auto"):
            _set(config, key, value)
        elif have != value:
            raise SgeoError(
                f'{source} sets {key}={have} but this run has {value}; set it to "auto" or match the options'
            )
    for key, value in filled.items():
        if _get(config, key) == "auto":
            _set(config, key, value)
    if resolved.device == "cpu" and _get(config, "optimizer.params.torch_adam") is None:
        _set(config, "optimizer.params.torch_adam", True)  # see above: exact resume on CPU
    leftover = _autos(config)
    if leftover:
        raise SgeoError(f'{source}: cannot fill "auto" for {", ".join(leftover)}; give them values')
    return config


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _autos(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _autos(v, f"{prefix}{key}.")]
    return [prefix[:-1]] if node == "auto" else []


# -- checkpoints -----------------------------------------------------------------------------------
def _latest_tag(checkpoints: Path) -> str | None:
    pointer = checkpoints / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    return tag if (checkpoints / tag / TRAINER_STATE).is_file() else None


def _check_resumable(resolved: Resolved) -> None:
    """Refuse to resume a checkpoint made by different settings (before anything is loaded)."""
    checkpoints = Path(resolved.out) / CHECKPOINTS
    tag = _latest_tag(checkpoints)
    if tag is None:
        return
    saved = json.loads((checkpoints / tag / TRAINER_STATE).read_text())["resolved"]
    now = json.loads(json.dumps(asdict(resolved)))
    for key in now:
        if key in RESUME_FREE or key in ("num_samples", "steps_per_epoch", "total_steps", "warmup_steps"):
            continue
        if saved.get(key) != now[key]:
            raise SgeoError(
                f"{checkpoints / tag} was trained with {key}={saved.get(key)!r}, this run has {now[key]!r}; "
                "rerun with the same options to resume, or use another --out"
            )


def save_checkpoint(run: Run) -> None:
    """A DeepSpeed checkpoint of the trainable tensors and optimizer states, with the step, the resolved
    recipe and the data position; `latest` is switched to it only once every rank has written its part."""
    import torch.distributed as dist

    tag = f"step-{run.step:07d}"
    epoch, in_epoch = divmod(run.step, run.plan.steps_per_epoch)
    state = {"step": run.step, "epoch": epoch, "step_in_epoch": in_epoch, "resolved": asdict(run.resolved),
             "trainable": run.trainable}  # fmt: skip
    if run.rank == 0:
        (run.checkpoints / tag).mkdir(parents=True, exist_ok=True)
        _write_json(run.checkpoints / tag / TRAINER_STATE, state)
    run.engine.save_checkpoint(str(run.checkpoints), tag=tag, client_state={"sgeo": state}, save_latest=False,
                               exclude_frozen_parameters=True)  # fmt: skip
    dist.barrier()
    if run.rank == 0:
        _write_text_atomic(run.checkpoints / LATEST, tag)
        tags = sorted(p.name for p in run.checkpoints.glob("step-*") if p.is_dir())
        for old in tags[: max(0, tags.index(tag) + 1 - KEEP_CHECKPOINTS)]:
            shutil.rmtree(run.checkpoints / old, ignore_errors=True)
    dist.barrier()


def load_checkpoint(run: Run) -> bool:
    """Continue from the latest checkpoint under out/checkpoints, if there is one."""
    tag = _latest_tag(run.checkpoints)
    if tag is None:
        return False
    path, client = run.engine.load_checkpoint(str(run.checkpoints), tag=tag, load_module_strict=False)
    if path is None:
        raise SgeoError(f"cannot load checkpoint {run.checkpoints / tag}; delete it to start over")
    state = client["sgeo"]
    run.step = int(state["step"])
    if run.rank == 0:  # a killed run may have logged steps after its last checkpoint
        run.metrics = [m for m in _read_metrics(run.out / "metrics.jsonl") if m["step"] <= run.step]
        _write_metrics(run.out / "metrics.jsonl", run.metrics)
    log(f"resumed from {run.checkpoints / tag}: step {run.step}, epoch {state['epoch']}, "
        f"step {state['step_in_epoch']} of {run.plan.steps_per_epoch} in that epoch")  # fmt: skip
    return True


# -- training --------------------------------------------------------------------------------------
def _loader(run: Run):
    import torch

    from sgeo.pipeline.training_data import RankBatchSampler

    sampler = RankBatchSampler(run.plan, run.rank, run.step, run.resolved.total_steps)
    workers = run.resolved.num_workers
    return torch.utils.data.DataLoader(
        run.dataset, batch_sampler=sampler, collate_fn=run.collator, num_workers=workers,
        pin_memory=run.device.type == "cuda", prefetch_factor=4 if workers else None,
        worker_init_fn=_worker_init if workers else None,
    )  # fmt: skip


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # loader workers tokenize and read; leave the cores to the model


def _seed_for(run: Run, micro: int) -> int:
    """One seed per (seed, step, micro-batch, rank): a resumed step draws exactly what it drew before."""
    return (run.resolved.seed * 1_000_003 + run.step * run.resolved.grad_accum + micro) * 4099 + run.rank


def image_features(run: Run, batch: dict, seed: int):
    """(clip [I, T, Dc], moge [I, L, T, Dm]) of a batch: read from the store, or encoded from pixels online."""
    import torch

    from sgeo.pipeline.training_data import drop_clip

    if "pixel_values" in batch:
        clip, moge = run.model.encode_images(batch["pixel_values"].to(run.device))
    else:
        clip = batch["clip_features"].to(run.device, non_blocking=True)
        moge = batch["moge_features"].to(run.device, non_blocking=True)
    if run.resolved.clip_drop:
        clip = drop_clip(clip, run.resolved.clip_drop, torch.Generator().manual_seed(seed))
    return clip, moge


def micro_step(run: Run, batch: dict, micro: int):
    """Forward and backward of one micro-batch (the optimizer steps at the accumulation boundary)."""
    import torch

    seed = _seed_for(run, micro)
    torch.manual_seed(seed)  # LoRA dropout
    clip, moge = image_features(run, batch, seed)
    out = run.engine(
        input_ids=batch["input_ids"].to(run.device),
        attention_mask=batch["attention_mask"].to(run.device),
        labels=batch["labels"].to(run.device),
        clip_features=clip,
        moge_features=moge,
    )
    run.engine.backward(out.loss)
    run.engine.step()
    return out.loss.detach()


def train(run: Run) -> None:
    """The loop: `grad_accum` micro-batches per step; metrics per step; checkpoints every --save-every."""
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    resolved, total = run.resolved, run.resolved.total_steps
    if run.step >= total:
        log(f"already trained {run.step} of {total} steps")
        return
    from sgeo.pipeline.training_data import Prefetcher

    batches = Prefetcher(_loader(run), depth=2)
    bar = tqdm(total=total, initial=run.step, desc=f"stage {resolved.stage}", unit="step", dynamic_ncols=True,
               disable=run.rank != 0, file=sys.stderr)  # fmt: skip
    metrics_file = (run.out / "metrics.jsonl").open("a") if run.rank == 0 else None
    try:
        while run.step < total:
            lrs = [group["lr"] for group in run.engine.optimizer.param_groups]  # what this step uses
            start, waited, losses = time.perf_counter(), 0.0, []
            for micro in range(resolved.grad_accum):
                t = time.perf_counter()
                batch = next(batches)
                waited += time.perf_counter() - t
                losses.append(micro_step(run, batch, micro))
            loss = torch.stack(losses).mean().to(run.device)
            if run.world_size > 1:
                dist.all_reduce(loss)
                loss /= run.world_size
            run.step += 1
            elapsed = time.perf_counter() - start
            record = {"step": run.step, "loss": float(loss), "lr": lrs[0],
                      "samples_per_s": resolved.global_batch / elapsed, "data_wait": waited / elapsed}  # fmt: skip
            if len(lrs) > 1:
                record["adapter_lr"] = lrs[1]
            run.metrics.append(record)
            if metrics_file:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
            bar.set_postfix(
                loss=f"{record['loss']:.4f}", lr=f"{lrs[0]:.2e}", sps=f"{record['samples_per_s']:.1f}"
            )
            bar.update(1)
            if run.step % resolved.save_every == 0 or run.step == total:
                save_checkpoint(run)
    finally:
        batches.close()
        bar.close()
        if metrics_file:
            metrics_file.close()


# -- outputs ---------------------------------------------------------------------------------------
def _final_model(run: Run):
    """The trained model on rank 0 (None elsewhere). Under ZeRO-3 the trainable tensors are gathered and
    loaded into a fresh copy of the starting model (the frozen ones never changed)."""
    if run.engine.zero_optimization_stage() < 3:
        return run.model if run.rank == 0 else None
    import deepspeed

    from sgeo.model import LoraSettings, configure_stage, load_model

    state = {}
    for name, param in run.model.named_parameters():
        if param.requires_grad:
            with deepspeed.zero.GatheredParameters([param]):
                if run.rank == 0:
                    state[name] = param.detach().cpu().clone()
    if run.rank != 0:
        return None
    fresh, _ = load_model(run.resolved.model, load_towers=False, dtype=next(iter(state.values())).dtype)
    configure_stage(
        fresh, run.resolved.stage, LoraSettings(**run.resolved.lora) if run.resolved.lora else None
    )
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    if unexpected or set(state) - {n for n, _ in fresh.named_parameters()}:
        raise RuntimeError(f"gathered tensors do not fit the starting model: {unexpected[:3]}")
    return fresh


def save_outputs(run: Run) -> None:
    """HF model dir (+ lora/, merged/), trainable.json, loss.png; rank 0 writes."""
    import torch.distributed as dist

    from sgeo.model.saving import save_trained
    from sgeo.model.stages import stage_record

    model = _final_model(run)
    if run.rank == 0:
        lora = None
        if run.resolved.lora:
            from sgeo.model import LoraSettings

            lora = LoraSettings(**run.resolved.lora)
        written = save_trained(model, run.processor, run.out, merge_lora=run.resolved.merge_lora)
        _write_json(run.out / "trainable.json", {"stage_record": stage_record(run.resolved.stage, lora),
                                                 "towers_loaded": run.resolved.online, "trainable": run.trainable})  # fmt: skip
        plot_loss(run.metrics, run.out / "loss.png", f"stage {run.resolved.stage}")
        log("wrote " + ", ".join(f"{k} {v}" for k, v in written.items()))
    dist.barrier()


def plot_loss(metrics: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cleanup(run: Run) -> None:
    import torch.distributed as dist

    if run.features is not None and hasattr(run.features, "close"):
        run.features.close()
    if run.threads_before is not None:
        import torch

        torch.set_num_threads(run.threads_before)
    if run.owns_process_group and dist.is_initialized():
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()


def run_train(config: TrainConfig, features=None) -> dict:
    """`sgeo train`: setup, resume if a checkpoint exists, train, save; returns a summary.

    The launcher variables it sets for a single process are removed again, so in-process callers can
    call it repeatedly."""
    launcher = {key: os.environ.get(key) for key in LAUNCHER_ENV}
    try:
        run = setup(config, features=features)
        try:
            load_checkpoint(run)
            train(run)
            save_outputs(run)
        finally:
            cleanup(run)
    finally:
        for key, value in launcher.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    last = run.metrics[-1] if run.metrics else {}
    return {"out": str(run.out), "steps": run.step, "loss": last.get("loss"), "trainable": len(run.trainable)}


# -- small file helpers ----------------------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    _write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill
    return records


def _write_metrics(path: Path, metrics: list[dict]) -> None:
    _write_text_atomic(path, "".join(json.dumps(m) + "\n" for m in metrics))
