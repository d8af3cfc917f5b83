"""The training loop: `grad_accum` micro-batches per optimizer step, seeded per (step, micro-batch, rank) so a
resumed step draws what it drew before; metrics per step; a checkpoint every --save-every."""

from __future__ import annotations

import json
import sys
import time

from sgeo.errors import SgeoError, one_line
from sgeo.model.conversation import IGNORE_INDEX  # labels the loss does not read

from .checkpoints import save_checkpoint
from .log import log


def _loader(run):
    import torch

    from sgeo.pipeline.training.batches import RankBatchSampler

    sampler = RankBatchSampler(run.plan, run.rank, run.step, run.settings.total_steps)
    workers = run.settings.num_workers
    return torch.utils.data.DataLoader(
        run.dataset, batch_sampler=sampler, collate_fn=run.collator, num_workers=workers,
        pin_memory=run.device.type == "cuda", prefetch_factor=4 if workers else None,
        worker_init_fn=_worker_init if workers else None,
    )  # fmt: skip


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # loader workers tokenize and read; leave the cores to the model


def _seed_for(run, micro: int) -> int:
    """One seed per (seed, step, micro-batch, rank): a resumed step draws exactly what it drew before."""
    return (run.settings.seed * 1_000_003 + run.step * run.settings.grad_accum + micro) * 4099 + run.rank


def image_features(run, batch: dict, seed: int) -> dict:
    """{tower: [I, ...]} of a batch: read from the stores, or encoded from pixels online."""
    import torch

    from sgeo.pipeline.training.collate import drop_clip

    if "pixel_values" in batch:
        features = run.model.encode_images(batch["pixel_values"].to(run.device))
    else:
        features = {name: f.to(run.device, non_blocking=True) for name, f in batch["image_features"].items()}
    if run.settings.clip_drop:
        features["clip"] = drop_clip(
            features["clip"], run.settings.clip_drop, torch.Generator().manual_seed(seed)
        )
    return features


def micro_step(run, batch: dict, micro: int):
    """Forward and backward of one micro-batch (the optimizer steps at the accumulation boundary)."""
    import torch

    seed = _seed_for(run, micro)
    torch.manual_seed(seed)  # LoRA dropout
    features = image_features(run, batch, seed)
    out = run.engine(
        input_ids=batch["input_ids"].to(run.device),
        attention_mask=batch["attention_mask"].to(run.device),
        labels=batch["labels"].to(run.device),
        image_features=features,
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


def _check_finite(run, loss, batch: dict, micro: int) -> None:
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
            message = one_line(message.rsplit("SgeoError: ", 1)[1], first=True)
        raise SgeoError(message) from None


def train(run) -> None:
    """The loop: `grad_accum` micro-batches per step; metrics per step; checkpoints every --save-every."""
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    settings, total = run.settings, run.settings.total_steps
    if run.step >= total:
        log(f"already trained {run.step} of {total} steps")
        return
    from sgeo.pipeline.training.prefetch import Prefetcher

    batches = Prefetcher(_loader(run), depth=2)
    bar = tqdm(total=total, initial=run.step, desc=f"stage {settings.stage}", unit="step", dynamic_ncols=True,
               disable=run.rank != 0, file=sys.stderr)  # fmt: skip
    metrics_file = (run.out / "metrics.jsonl").open("a") if run.rank == 0 else None
    try:
        while run.step < total:
            lrs = [group["lr"] for group in run.engine.optimizer.param_groups]  # what this step uses
            start, waited, losses = time.perf_counter(), 0.0, []
            for micro in range(settings.grad_accum):
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
                      "samples_per_s": settings.global_batch / elapsed, "data_wait": waited / elapsed}  # fmt: skip
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
            if run.step % settings.save_every == 0 or run.step == total:
                save_checkpoint(run)
    finally:
        batches.close()
        bar.close()
        if metrics_file:
            metrics_file.close()
