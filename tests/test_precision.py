"""The one precision policy (`sgeo.precision`): names -> dtypes, the default for a device, and each job's
accepted subset of the names, checked in one message."""

from __future__ import annotations

import pytest
import torch

from sgeo.errors import SgeoError


def test_names_and_dtypes_map_both_ways():
    from sgeo.precision import PRECISIONS, precision_name, torch_dtype

    assert [torch_dtype(name) for name in PRECISIONS] == [torch.bfloat16, torch.float16, torch.float32]
    assert [precision_name(torch_dtype(name)) for name in PRECISIONS] == list(PRECISIONS)
    assert precision_name(torch.int8) == "torch.int8"  # no name: its str, as eval records it


def test_default_for_a_device():
    from sgeo.precision import default_precision

    assert default_precision("cpu") == "fp32"
    # training accepts no fp16: bf16 on any GPU, without asking the GPU (none here)
    assert default_precision("cuda", ("bf16", "fp32")) == "bf16"
    assert default_precision("cuda:1", ("bf16", "fp32")) == "bf16"


def test_each_job_accepts_its_subset_with_one_message():
    from sgeo.inference.loading import INFERENCE_PRECISIONS
    from sgeo.jobs.extract.config import EXTRACT_PRECISIONS
    from sgeo.jobs.train.recipe import TRAIN_PRECISIONS
    from sgeo.precision import accepted, check_precision

    assert TRAIN_PRECISIONS == ("bf16", "fp32")
    assert EXTRACT_PRECISIONS == INFERENCE_PRECISIONS == ("bf16", "fp16", "fp32")
    assert check_precision(None, TRAIN_PRECISIONS) is None
    assert check_precision("bf16", TRAIN_PRECISIONS) == "bf16"
    with pytest.raises(SgeoError, match=r"^--precision must be one of bf16, fp32, got fp16$"):
        check_precision("fp16", TRAIN_PRECISIONS)
    with pytest.raises(AssertionError, match="fp64"):
        accepted("bf16", "fp64")  # a job cannot declare a name the policy does not know


def test_the_inference_commands_share_one_device_and_precision_help():
    """`sgeo ask`, `sgeo eval` and `sgeo serve` load through `pick_device`: their --device (and --precision,
    where they take it) say the same thing, from one declaration."""
    import dataclasses

    from sgeo.inference.loading import DEVICE_HELP, PRECISION_HELP
    from sgeo.jobs.ask import AskConfig
    from sgeo.jobs.eval import EvalConfig
    from sgeo.jobs.serve import ServeConfig

    def help_of(config, name):
        return next(f for f in dataclasses.fields(config) if f.name == name).metadata["sgeo.cli"].help

    assert {help_of(c, "device") for c in (AskConfig, EvalConfig, ServeConfig)} == {DEVICE_HELP}
    assert {help_of(c, "precision") for c in (AskConfig, EvalConfig)} == {PRECISION_HELP}
    assert "cuda:N" in DEVICE_HELP  # what pick_device accepts
