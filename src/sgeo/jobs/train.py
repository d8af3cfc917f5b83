"""`sgeo train`: stage 1 or 2 of SpatialGeo on DeepSpeed, from the feature store (or pixels with --online).

One flat recipe, read top to bottom: `resolve` (train_recipe.py: per-stage defaults and the global batch),
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
import socket
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError

from .deepspeed_config import deepspeed_config
from .train_checkpoints import (
    CHECKPOINTS,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from .train_log import log
from .train_recipe import STAGE_RECIPES, Resolved, TrainConfig, check_config, resolve, resolve_batch

__all__ = [
    "STAGE_RECIPES",
    "Resolved",
    "TrainConfig",
    "check_config",
    "resolve",
    "resolve_batch",
    "run_train",
]

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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
    model_ref: Any = None  # the ResolvedModel training started from
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

    from sgeo.pipeline.training_data import (
        BatchPlan,
        Collator,
        TrainingDataset,
        images_past_the_cut,
        unsupervised_samples,
    )

    world_size = int(os.environ["WORLD_SIZE"])
    resolved = resolve(config, world_size, device_type)
    if device_type == "cpu" and resolved.attn == "flash_attention_2":
        raise SgeoError("--attn flash_attention_2 needs a GPU (and the gpu extra); use sdpa on CPU")
    check_resumable(resolved)

    # data: JSON samples joined to store rows (the store's fingerprint must match the model's encoders)
    if features is None and resolved.store is not None:
        from sgeo.cache import FeatureStore

        features = FeatureStore.open(resolved.store)
    dtype = torch.bfloat16 if resolved.precision == "bf16" else torch.float32
    from sgeo.model import resolve_model

    model_ref = resolve_model(resolved.model)  # once; everything below loads through this object
    processor = model_ref.processor()
    processor.image_aspect_ratio = _aspect_mode(resolved, features)
    if features is not None and not resolved.online:  # online, the store only picks the samples
        check_features(features, model_ref, processor)
    processor.model_max_length = resolved.model_max_length
    join = _join(resolved, features)
    join.invalid += images_past_the_cut(join, processor, resolved.template)
    if join.invalid:
        if not resolved.skip_invalid:
            raise SgeoError(join.refusal(resolved.data))
        bad = {sample_id for sample_id, _ in join.invalid}
        keep = [i for i, s in enumerate(join.samples) if str(s.get("id", i)) not in bad]
        join.samples, join.rows = [join.samples[i] for i in keep], [join.rows[i] for i in keep]
        join.counts["invalid"] = len(join.invalid)
    log(f"data {resolved.data}: {join.summary()}")
    if unsupervised := unsupervised_samples(join, processor, resolved.template):
        log(
            f"warning: {len(unsupervised[0])} of {unsupervised[1]} checked samples have every label ignored (e.g. "
            f"{unsupervised[0][0]}): LLaVA's rule for rounds whose tokens do not line up with the template; check "
            "that the tokenizer is the one the model was trained with"
        )
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
        warmup_steps=math.ceil(resolved.warmup_ratio * total), image_aspect_ratio=processor.image_aspect_ratio,
        model_parts=model_ref.describe(),
    )  # fmt: skip
    log(
        f"stage {resolved.stage}: global batch {resolved.global_batch} = {resolved.batch_size} per device x "
        f"{world_size} ranks x {resolved.grad_accum} accumulation; {total} steps "
        f"({plan.steps_per_epoch} per epoch, {plan.samples_per_epoch} of {len(dataset)} samples per epoch)"
    )

    # model: the towers only online; stage 2 starts from a model without LoRA
    from sgeo.model import LoraSettings, configure_stage, load_model
    from sgeo.model.saving import has_lora

    model = load_model(
        model_ref, load_towers=resolved.online, dtype=dtype, attn_implementation=resolved.attn
    )[0]
    if has_lora(model):
        raise SgeoError(
            f"--model {resolved.model} already carries a LoRA adapter; start stage {resolved.stage} from a model "
            "without one (a stage-1 output, or the merged/ dir of a stage-2 output)"
        )
    torch.manual_seed(resolved.seed)  # LoRA's initialisation
    lora = LoraSettings(**resolved.lora) if resolved.lora else None
    trainable = configure_stage(model, resolved.stage, lora)
    if resolved.gradient_checkpointing:
        checkpoint_activations(model.language_model)
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
        collator=Collator(processor, None if resolved.online else features, config_.clip_feature_shape,
                          config_.moge_feature_shape),
        owns_process_group=owns_process_group, model_ref=model_ref, features=features, threads_before=threads,
    )  # fmt: skip
    if rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        write_json(run.out / "train_config.json", asdict(resolved))
    return run


def checkpoint_activations(llm) -> None:
    """Recompute the LLM's activations in backward (non-reentrant: the adapters' gradients flow through)."""
    enable = getattr(llm, "activation_checkpointing_enable", None)  # transformers >= 5
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _aspect_mode(resolved: Resolved, features) -> str:
    """The pixels' aspect mode: the store's own (cached); online --image-aspect-ratio, else the stage's as in
    LLaVA's scripts (pretraining: CLIP's resize + centre crop; finetuning: pad to a square)."""
    if features is not None and not resolved.online:
        mode = (features.fingerprint.get("preprocessing") or {}).get("image_aspect_ratio")
        if resolved.image_aspect_ratio and mode and resolved.image_aspect_ratio != mode:
            raise SgeoError(
                f"--image-aspect-ratio {resolved.image_aspect_ratio} but the store was extracted with {mode}; "
                "drop the option (a cached run uses the store's pixels) or re-extract"
            )
        if mode:
            return mode
    return resolved.image_aspect_ratio or STAGE_RECIPES[resolved.stage].image_aspect_ratio


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
    # On a machine with a CUDA toolkit but no GPU, building DeepSpeed's CPU comm op warns about the runtime.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def check_features(features, model_ref, processor) -> None:
    """Refuse a store made by other encoders or preprocessing; its storage dtype is its own business."""
    from sgeo.cache import check_fingerprint
    from sgeo.model.fingerprint import encoder_fingerprint

    expected = encoder_fingerprint(
        model_ref, processor.preprocessing_spec(), features.fingerprint.get("dtype")
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
        use_cache=False,  # training needs no KV cache (and gradient checkpointing refuses one)
    )
    loss = out.loss
    if not bool((batch["labels"] != IGNORE_INDEX).any()):
        # Every label ignored (LLaVA's rule for a conversation whose rounds do not line up): the mean over no
        # token is NaN. Such a micro-batch teaches nothing; it still runs backward so every rank steps alike.
        loss = out.logits.float().sum() * 0.0
    _check_finite(run, loss, batch, micro)  # before backward: a NaN must never reach the weights
    run.engine.backward(loss)
    run.engine.step()
    return loss.detach()


IGNORE_INDEX = -100  # sgeo.model.IGNORE_INDEX; labels the loss does not read


def _check_finite(run: Run, loss, batch: dict, micro: int) -> None:
    """Stop every rank together, naming the step and the samples, when a loss is not finite."""
    import torch
    import torch.distributed as dist

    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if run.world_size > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not int(finite):
        ids = ", ".join(map(str, batch.get("ids", [])[:4])) or "unknown"
        raise SgeoError(
            f"the loss is {float(loss.detach())} at step {run.step + 1} (micro-batch {micro}, samples {ids} on rank "
            f"{run.rank}); nothing of this step was applied and the last checkpoint is intact: check those "
            "samples' features (sgeo cache verify) or lower --lr"
        )


def _next_batch(batches):
    """The next batch; an error raised inside a loader worker arrives as one line, as it was raised."""
    try:
        return next(batches)
    except SgeoError as error:
        message = str(error)
        if "DataLoader worker" in message and "SgeoError: " in message:
            message = message.rsplit("SgeoError: ", 1)[1].strip().splitlines()[0]
        raise SgeoError(message) from None


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
                batch = _next_batch(batches)
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
    fresh, _ = load_model(run.model_ref, load_towers=False, dtype=next(iter(state.values())).dtype)
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
        write_json(run.out / "trainable.json", {"stage_record": stage_record(run.resolved.stage, lora),
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
