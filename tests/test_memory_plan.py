"""`--gradient-checkpointing auto`: the plan from a measured step's memory (pure: no GPU needed)."""

from sgeo.jobs.train.memory_plan import StepMemory, optimizer_bytes, plan_memory, step_memory

GIB = 2**30


def test_line_through_two_measured_peaks():
    memory = step_memory({2: 20 * GIB, 1: 16 * GIB})
    assert memory.per_sample == 4 * GIB and memory.fixed == 12 * GIB
    assert memory.peak(8) == 44 * GIB


def test_batch_that_fits_turns_checkpointing_off_and_keeps_the_batch():
    plan = plan_memory(16, 1, StepMemory(fixed=14 * GIB, per_sample=3 * GIB), 80 * GIB, sequence=1250)
    assert (plan.batch_size, plan.grad_accum, plan.gradient_checkpointing) == (16, 1, False)


def test_too_large_a_batch_splits_into_micro_batches_with_the_same_global_batch():
    # the 7B shape in stage 1: 32 samples a device, ~5 GiB of activations each without recomputation
    memory = StepMemory(fixed=14 * GIB, per_sample=5 * GIB)
    plan = plan_memory(32, 1, memory, 80 * GIB, sequence=1250)
    assert not plan.gradient_checkpointing
    assert plan.batch_size == 8 and plan.grad_accum == 4  # 8 x 5 + 14 = 54 GiB <= 72; 16 would need 94
    assert plan.batch_size * plan.grad_accum == 32
    assert memory.peak(plan.batch_size) <= 0.9 * 80 * GIB


def test_optimizer_states_count_against_the_budget():
    memory = StepMemory(fixed=14 * GIB, per_sample=5 * GIB)
    trainable = 400_000_000  # LoRA r=128 on a 7B plus the adapters, about
    with_optimizer = plan_memory(32, 1, memory, 80 * GIB, 1250, extra_bytes=optimizer_bytes(trainable, 1))
    assert with_optimizer.batch_size == 8  # 6 GiB of optimizer: 8 x 5 + 14 + 6 = 60 still fits
    tight = plan_memory(32, 1, memory, 80 * GIB, 1250, extra_bytes=optimizer_bytes(4_000_000_000, 1))
    assert tight.batch_size < 8 or tight.gradient_checkpointing  # 60 GiB of optimizer: far less fits
    assert optimizer_bytes(trainable, 8) == optimizer_bytes(trainable, 1) / 8  # ZeRO partitions it


def test_thin_micro_batches_keep_checkpointing_on():
    # only one sample of a short sequence fits: recomputing beats thin matmuls
    plan = plan_memory(16, 2, StepMemory(fixed=60 * GIB, per_sample=6 * GIB), 80 * GIB, sequence=600)
    assert (plan.batch_size, plan.grad_accum, plan.gradient_checkpointing) == (16, 2, True)
    assert plan.reason.startswith("on:")


def test_a_probe_that_ran_out_of_memory_means_checkpointing():
    never = StepMemory(fixed=float("inf"), per_sample=float("inf"))
    assert plan_memory(4, 1, never, 80 * GIB, 2048).gradient_checkpointing


def test_resume_keeps_the_micro_batch_the_checkpoint_ran_with():
    from sgeo.jobs.train.memory_plan import adopt_saved_plan
    from sgeo.jobs.train.recipe import TrainConfig, training_settings

    config = TrainConfig(stage=1, data="d.json", out="o", store="s")
    settings = training_settings(config, world_size=8, device="cuda")
    assert settings.gradient_checkpointing is None and (settings.batch_size, settings.grad_accum) == (32, 1)
    saved = {"global_batch": 256, "batch_size": 8, "grad_accum": 4, "gradient_checkpointing": False}
    resumed = adopt_saved_plan(settings, saved, batch_given=False)
    assert (resumed.batch_size, resumed.grad_accum, resumed.gradient_checkpointing) == (8, 4, False)
    # an explicit split or another global batch: nothing adopted (the resume check then compares them)
    assert adopt_saved_plan(settings, saved, batch_given=True) == settings
    assert adopt_saved_plan(settings, {**saved, "global_batch": 128}, batch_given=False) == settings
    # an explicit checkpointing choice on resume (free to change) keeps the split, not auto's choice
    given = training_settings(TrainConfig(stage=1, data="d.json", out="o", store="s", gradient_checkpointing=True),
                              world_size=8, device="cuda")  # fmt: skip
    resumed = adopt_saved_plan(given, saved, batch_given=False)
    assert (resumed.batch_size, resumed.grad_accum, resumed.gradient_checkpointing) == (8, 4, True)


def test_auto_is_checkpointing_on_a_cpu():
    """Off a GPU, auto keeps the old default (on), measuring nothing."""
    import torch

    from sgeo.jobs.train.memory_plan import choose_checkpointing
    from sgeo.jobs.train.recipe import TrainConfig, training_settings

    settings = training_settings(TrainConfig(stage=1, data="d.json", out="o", store="s"), 1, "cpu")
    chosen, reason = choose_checkpointing(settings, None, None, None, torch.device("cpu"), batch_given=False)
    assert chosen.gradient_checkpointing is True and reason is None


def test_zero3_is_not_probed_and_recomputes():
    """Under ZeRO-3 the unpartitioned model of the probe says nothing of the real step: on, nothing measured
    (a CUDA device object is enough to reach that rule; no GPU is touched)."""
    import torch

    from sgeo.jobs.train.memory_plan import choose_checkpointing
    from sgeo.jobs.train.recipe import TrainConfig, training_settings

    settings = training_settings(TrainConfig(stage=2, data="d.json", out="o", store="s", zero=3), 8, "cuda")
    chosen, reason = choose_checkpointing(
        settings, None, None, None, torch.device("cuda", 0), batch_given=False
    )
    assert chosen.gradient_checkpointing is True and "not probed" in reason


def test_a_failure_setting_up_the_device_releases_the_process_group():
    """The process group a run opened is closed again when setting up its device fails (here a malformed
    LOCAL_WORLD_SIZE on CPU), so the next run in that process starts its own rather than adopting a stale one.
    In a fresh process: DeepSpeed's distributed setup leaves state behind in the process that runs it."""
    import os
    import subprocess
    import sys

    script = """
import torch.distributed as dist
from sgeo.jobs.train.recipe import TrainConfig, training_settings
from sgeo.jobs.train.setup import open_process_group
settings = training_settings(TrainConfig(stage=1, data="d.json", out="o", store="s"), 1, "cpu")
try:
    open_process_group(settings, "cpu", launched=False)
except ValueError:
    print("refused; process group still open:", dist.is_initialized())
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"LOCAL_WORLD_SIZE": "two"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "refused; process group still open: False" in out.stdout, out.stderr[-2000:]
