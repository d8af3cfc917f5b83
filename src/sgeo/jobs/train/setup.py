"""`setup`: everything a run needs, built in order (environment, recipe, data, model, DeepSpeed engine), with
every user error raised before anything heavy is built."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.precision import torch_dtype

from .checkpoints import CHECKPOINTS, check_resumable, latest_checkpoint, write_json
from .data import aspect_mode, check_features, prepare_data
from .deepspeed_config import deepspeed_config
from .environment import cpu_threads, prepare_environment, quiet_deepspeed
from .log import log
from .memory_plan import adopt_saved_plan, choose_checkpointing
from .recipe import TrainConfig, TrainSettings, check_config, training_settings


@dataclass
class Run:
    """Everything `train` needs, built by `setup`."""

    settings: TrainSettings
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
    resolved_model: Any = None  # the ResolvedModel training started from
    features: Any = None  # the FeatureStore (None online)
    threads_before: int | None = None  # torch threads before setup (CPU), restored by cleanup
    step: int = 0
    metrics: list[dict] = dataclasses.field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.settings.out)

    @property
    def checkpoints(self) -> Path:
        return self.out / CHECKPOINTS


def setup(config: TrainConfig, features=None) -> Run:
    """Environment, data, model and DeepSpeed engine; user errors surface before any of them is built.

    features: instead of opening `config.store`, read features from this object (FeatureStore's
    `read`/`manifest`/`fingerprint`/`dtype` API).
    """
    check_config(config)
    device_type, launched = prepare_environment()
    import torch

    from sgeo.model import configure_stage, load_model, resolve_model
    from sgeo.model.saving import has_lora
    from sgeo.pipeline.training.collate import Collator

    world_size = int(os.environ["WORLD_SIZE"])
    resolved_model = resolve_model(config.model)  # once; everything below loads through this object
    processor = resolved_model.processor()  # config files only; it knows the template the model speaks
    settings = training_settings(config, world_size, device_type, processor.template_name)
    if device_type == "cpu" and settings.attn == "flash_attention_2":
        raise SgeoError("--attn flash_attention_2 needs a GPU (and the gpu extra); use sdpa on CPU")
    batch_given = config.batch_size is not None or config.grad_accum is not None
    latest = latest_checkpoint(settings.out)  # read once: the plan it ran, then the check against it
    settings = adopt_saved_plan(settings, latest[1] if latest else {}, batch_given)
    check_resumable(settings, latest)
    check_towers(settings, resolved_model.config)

    # data: JSON samples joined to store rows (the store's fingerprint must match the model's encoders)
    if features is None and settings.store is not None:
        from sgeo.pipeline.feature_set import open_feature_set

        features = open_feature_set(settings.store, resolved_model.config.tower_names)
    if settings.lora is not None and config.lora_r is not None:
        check_lora_rank(settings.lora.r, resolved_model)
    processor.image_aspect_ratio = aspect_mode(settings, features)
    if features is not None and not settings.online:  # online, the store only picks the samples
        check_features(features, resolved_model, processor)
    processor.model_max_length = settings.model_max_length
    data = prepare_data(settings, features, processor, world_size)
    total = data.total_steps
    settings = dataclasses.replace(
        settings, num_samples=len(data.dataset), steps_per_epoch=data.plan.steps_per_epoch, total_steps=total,
        warmup_steps=math.ceil(settings.warmup_ratio * total), image_aspect_ratio=processor.image_aspect_ratio,
        model_parts=resolved_model.describe(),
    )  # fmt: skip
    log(
        f"stage {settings.stage}: global batch {settings.global_batch} = {settings.batch_size} per device x "
        f"{world_size} ranks x {settings.grad_accum} accumulation; {total} steps "
        f"({data.plan.steps_per_epoch} per epoch, {data.plan.samples_per_epoch} of {len(data.dataset)} samples "
        "per epoch)"
    )

    # model: the towers only online; stage 2 starts from a model without LoRA
    dtype = torch_dtype(settings.precision)
    model = load_model(
        resolved_model, load_towers=settings.online, dtype=dtype, attn_implementation=settings.attn
    )[0]
    if has_lora(model):
        raise SgeoError(
            f"--model {settings.model} already carries a LoRA adapter; start stage {settings.stage} from a model "
            "without one (a stage-1 output, or the merged/ dir of a stage-2 output)"
        )
    if settings.visual_branches is not None:  # saved with the model: eval and ask see what training saw
        model.config.visual_branches = settings.visual_branches
    torch.manual_seed(settings.seed)  # LoRA's initialisation
    trainable = configure_stage(model, settings.stage, settings.lora)
    model.train()
    collator = Collator(processor, None if settings.online else features, model.config.feature_shapes)

    device, rank, owns_process_group, threads = open_process_group(settings, device_type, launched)
    try:
        # --gradient-checkpointing auto: measured on the device, agreed by every rank (memory_plan.py)
        settings, reason = choose_checkpointing(settings, model, data.dataset, collator, device, batch_given)
        if reason is not None:
            log(f"gradient checkpointing {reason}")
        plan = dataclasses.replace(data.plan, micro_batch=settings.batch_size, accum=settings.grad_accum)
        if settings.gradient_checkpointing:
            checkpoint_activations(model.language_model)
        engine = _deepspeed(model, settings)
    except BaseException:
        release_process_group(owns_process_group, threads)
        raise
    run = Run(
        settings=settings, rank=rank, world_size=world_size, device=device, engine=engine, model=engine.module,
        processor=processor, dataset=data.dataset, plan=plan, trainable=trainable, collator=collator,
        owns_process_group=owns_process_group, resolved_model=resolved_model, features=features,
        threads_before=threads,
    )  # fmt: skip
    if rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        write_json(run.out / "train_config.json", asdict(settings))
    return run


def open_process_group(settings: TrainSettings, device_type: str, launched: bool):
    """(device, rank, whether this run owns the process group, torch threads before) once the process group
    is up."""
    import deepspeed
    import torch
    import torch.distributed as dist

    quiet_deepspeed()
    owns_process_group = not dist.is_initialized()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if owns_process_group and not launched:
        # One process nobody launched: nothing to meet, so an in-memory store. DeepSpeed's env:// rendezvous
        # would start torch's TCPStore, which listens on every address (gloo and NCCL stay on loopback too,
        # see prepare_environment); DeepSpeed then adopts this process group.
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    deepspeed.init_distributed(dist_backend=backend, verbose=False)
    threads = None
    try:
        if device_type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
            threads = cpu_threads(settings.num_workers)
        return device, dist.get_rank(), owns_process_group, threads
    except BaseException:
        release_process_group(owns_process_group, threads)
        raise


def release_process_group(owns_process_group: bool, threads: int | None) -> None:
    """Undo `open_process_group` after a failure before the run exists (the run's cleanup does it after)."""
    import deepspeed
    import torch
    import torch.distributed as dist

    if threads is not None:
        torch.set_num_threads(threads)
    if owns_process_group and dist.is_initialized():
        deepspeed.comm.destroy_process_group()


def _deepspeed(model, settings: TrainSettings):
    """The DeepSpeed engine of `model` for `settings` (its config, parameter groups and schedule)."""
    import deepspeed

    ds_config = deepspeed_config(settings, model.config)
    schedule = None if "scheduler" in ds_config else partial(cosine_schedule, warmup=settings.warmup_steps,
                                                                total=settings.total_steps)  # fmt: skip
    engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, settings),
                                      config=ds_config, lr_scheduler=schedule)  # fmt: skip
    return engine


def check_lora_rank(r: int, resolved_model) -> None:
    """Refuse a --lora-r no adapted layer can use (the rank of B @ A is at most min(in, out)), from the model's
    config alone: the layers are built on the meta device, before any weight or LoRA tensor is allocated."""
    from accelerate import init_empty_weights
    from torch import nn

    from sgeo.model.modeling import SpatialGeoForCausalLM
    from sgeo.model.stages import llm_linear_names

    with init_empty_weights():
        llm = SpatialGeoForCausalLM(resolved_model.config).language_model
    adapted = set(llm_linear_names(llm))
    bound = max(min(m.in_features, m.out_features) for name, m in llm.named_modules()
                if isinstance(m, nn.Linear) and name.split(".")[-1] in adapted)  # fmt: skip
    if r > bound:
        raise SgeoError(
            f"--lora-r {r} is more than LoRA can use on this model: its adapted layers have min(in, out) <= "
            f"{bound}; pass --lora-r {bound} or less (0 fine-tunes the whole LLM)"
        )


def checkpoint_activations(llm) -> None:
    """Recompute the LLM's activations in backward (non-reentrant: the adapters' gradients flow through)."""
    enable = getattr(llm, "activation_checkpointing_enable", None)  # transformers >= 5
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def check_towers(settings, config) -> None:
    """The options that name towers name towers this model has."""
    from sgeo.model.configuration import ALL_BRANCHES

    branches = (ALL_BRANCHES, *config.tower_names)
    if settings.visual_branches not in (None, *branches):
        raise SgeoError(
            f"--visual-branches must be one of {', '.join(branches)}, got {settings.visual_branches}"
        )
    if settings.clip_drop and "clip" not in config.tower_names:
        raise SgeoError(
            f"--clip-drop zeroes the clip tower's features; this model's towers: {', '.join(config.tower_names)}"
        )


def param_groups(model, settings: TrainSettings) -> list[dict]:
    """Stage 2: the adapters at the adapter lr, the rest (LoRA) at lr. Stage 1: one group."""
    adapters = [p for m in model.adapters().values() for p in m.parameters() if p.requires_grad]
    ids = {id(p) for p in adapters}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    if settings.adapter_lr is None:
        return [{"params": adapters + rest, "weight_decay": settings.weight_decay}]
    return [
        {"params": rest, "weight_decay": settings.weight_decay, "lr": settings.lr},
        {"params": adapters, "weight_decay": settings.weight_decay, "lr": settings.adapter_lr},
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
