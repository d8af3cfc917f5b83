"""`--gradient-checkpointing auto`: recompute the LLM's activations only where a step would not fit without.

LLaVA's scripts turn gradient checkpointing on for every run: a 7B LLM's activations at its per-device batch
(32 in stage 1, 16 in stage 2, ~1,250 tokens a sample with SpatialGeo's interleaved tokens) do not fit an 80 GB
GPU. Recomputing them costs a second forward pass, about a third more compute per step; in stage 1 the LLM is
frozen, so that third buys nothing but memory. On a GPU, `auto` measures what a step needs without
checkpointing (two probe steps of the model on the device, before the engine exists) and then:

- the per-device batch fits: checkpointing off;
- a smaller micro-batch that divides it fits and still holds `MIN_TOKENS` tokens (matrix products of that size
  run near the device's rate): that micro-batch, without checkpointing, with the accumulation raised so the
  global batch is unchanged;
- otherwise: checkpointing on, as LLaVA's scripts.

On CPU, and with ZeRO-3 or a DeepSpeed config of the user's (the probe's unpartitioned model says nothing of
their steps), `auto` is on. The choice is printed and saved in train_config.json; a resumed run keeps the
micro-batch it started with.
"""

from __future__ import annotations

from dataclasses import dataclass

# of the device's memory a planned step may use: the rest for the allocator's fragmentation and NCCL's buffers
FILL = 0.9
MIN_TOKENS = 4096  # a micro-batch below this many tokens trades recomputation for slow, thin matmuls
OPTIMIZER_BYTES_PER_PARAM = 16  # ZeRO's fp32 master weights, Adam's two moments and the fp32 gradient


@dataclass(frozen=True)
class StepMemory:
    """Peak device memory of a training step without checkpointing: fixed + samples x per_sample (bytes)."""

    fixed: float
    per_sample: float

    def peak(self, samples: int) -> float:
        return self.fixed + samples * self.per_sample


@dataclass(frozen=True)
class MemoryPlan:
    batch_size: int  # per-device micro-batch
    grad_accum: int
    gradient_checkpointing: bool
    reason: str  # one line for the log


def step_memory(peaks: dict[int, float]) -> StepMemory:
    """The line through the peaks measured at two batch sizes ({samples: bytes})."""
    (small, low), (large, high) = sorted(peaks.items())[:2]
    per_sample = max(1.0, (high - low) / (large - small))
    return StepMemory(fixed=low - small * per_sample, per_sample=per_sample)


def optimizer_bytes(trainable_params: int, world_size: int) -> float:
    """What the optimizer adds after the probe (it ran no optimizer step): ZeRO partitions it over ranks."""
    return OPTIMIZER_BYTES_PER_PARAM * trainable_params / max(1, world_size)


def plan_memory(batch_size: int, grad_accum: int, memory: StepMemory, device_bytes: float, sequence: int,
                extra_bytes: float = 0.0, fill: float = FILL, min_tokens: int = MIN_TOKENS) -> MemoryPlan:  # fmt: skip
    """The micro-batch, accumulation and checkpointing for a step of `sequence` tokens a sample, given the
    measured step memory, the device's memory and what the optimizer adds (`extra_bytes`). The global batch
    (batch_size x grad_accum per device) never changes."""
    budget = fill * device_bytes - extra_bytes
    divisors = [m for m in range(batch_size, 0, -1) if batch_size % m == 0]
    fits = next((m for m in divisors if memory.peak(m) <= budget), None)
    gib = 2**30
    need = f"{memory.peak(batch_size) / gib:.1f} GiB at batch {batch_size} without checkpointing"
    if fits == batch_size:
        return MemoryPlan(batch_size, grad_accum, False, f"off: {need} fits {budget / gib:.1f} GiB")
    if fits is not None and fits * sequence >= min_tokens:
        return MemoryPlan(
            fits, grad_accum * (batch_size // fits), False,
            f"off: {need} exceeds {budget / gib:.1f} GiB, so micro-batch {fits} x accumulation "
            f"{grad_accum * (batch_size // fits)} (same global batch)",
        )  # fmt: skip
    return MemoryPlan(batch_size, grad_accum, True, f"on: {need} exceeds {budget / gib:.1f} GiB")


def measure_step_memory(model, make_batch, device, sizes: tuple[int, int] = (1, 2)) -> StepMemory:
    """Peak memory of a forward and backward pass of `model` (on a CUDA `device`, checkpointing off) at two
    batch sizes; `make_batch(n)` gives the model's keyword arguments for n samples of the longest sequence.
    The gradients it leaves are dropped: the engine starts from none."""
    import torch

    peaks = {}
    for size in sizes:
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            model(**make_batch(size), use_cache=False).loss.backward()
            torch.cuda.synchronize(device)
            peaks[size] = float(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            peaks[size] = float("inf")  # not even `size` samples fit: the plan falls back to checkpointing
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    if float("inf") in peaks.values():
        return StepMemory(fixed=float("inf"), per_sample=float("inf"))
    return step_memory(peaks)


def longest_sample_batches(dataset, collator, device):
    """`make_batch(n)` for the probe: n copies of the dataset's longest sample (LLaVA's length estimate, the one
    the length-grouped order uses), collated as the loop's batches are, on `device`; and its token count."""
    lengths = dataset.lengths()
    item = dataset[max(range(len(lengths)), key=lengths.__getitem__)]

    def make_batch(n: int) -> dict:
        batch = collator([item] * n)
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
        if "pixel_values" in batch:
            inputs["pixel_values"] = batch["pixel_values"].to(device)
        else:
            inputs["image_features"] = {name: f.to(device) for name, f in batch["image_features"].items()}
        return inputs

    return make_batch, len(item["input_ids"])


def choose_checkpointing(settings, model, dataset, collator, device, batch_given: bool):
    """(`settings` with `gradient_checkpointing` decided (None is auto) and, where the plan splits the per-device
    batch, the micro-batch and accumulation it runs; the reason, None where nothing was measured). Every rank
    measures, and all take the largest memory any of them saw, so all run the same plan."""
    import dataclasses

    import torch
    import torch.distributed as dist

    if settings.gradient_checkpointing is not None:
        return settings, None
    if device.type != "cuda":  # a CPU run: memory is what bounds it; the old default
        return dataclasses.replace(settings, gradient_checkpointing=True), None
    if settings.zero == 3 or settings.deepspeed:  # ZeRO-3 / a config of yours: the whole model on one device
        # says nothing of the step it will run, so the probe cannot judge: recompute, as LLaVA's scripts
        unprobed = "on: ZeRO-3 or --deepspeed (not probed)"
        return dataclasses.replace(settings, gradient_checkpointing=True), unprobed
    model.to(device)
    make_batch, sequence = longest_sample_batches(dataset, collator, device)
    memory = measure_step_memory(model, make_batch, device)
    measured = torch.tensor([memory.fixed, memory.per_sample], dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(measured, op=dist.ReduceOp.MAX)
    memory = StepMemory(*measured.tolist())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan = plan_memory(
        settings.batch_size, settings.grad_accum, memory, torch.cuda.get_device_properties(device).total_memory,
        sequence, extra_bytes=optimizer_bytes(trainable, settings.world_size),
        # a per-device batch the user gave is kept: only checkpointing is decided
        min_tokens=float("inf") if batch_given else MIN_TOKENS,
    )  # fmt: skip
    return dataclasses.replace(settings, batch_size=plan.batch_size, grad_accum=plan.grad_accum,
                               gradient_checkpointing=plan.gradient_checkpointing), plan.reason  # fmt: skip


def adopt_saved_plan(settings, saved: dict, batch_given: bool):
    """On resume, the run keeps the micro-batch and accumulation its checkpoint ran with (the batch order depends
    on the micro-batch; `auto` may have split the per-device batch), where it ran the same global batch and no
    split is given now; and, with `auto`, the checkpointing it chose."""
    import dataclasses

    if batch_given or saved.get("global_batch") != settings.global_batch:
        return settings
    keys = ["batch_size", "grad_accum"] + (
        ["gradient_checkpointing"] if settings.gradient_checkpointing is None else []
    )
    if any(saved.get(k) is None for k in keys):
        return settings
    return dataclasses.replace(settings, **{k: saved[k] for k in keys})
