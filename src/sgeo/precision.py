"""Compute precision, in one place: the names `--precision` takes, the torch dtype each stands for, and the
default for a device (bf16 on a GPU, fp16 where the GPU has no bf16, fp32 on the CPU). Each job declares once
which of the names it accepts (`accepted`) and checks a value with `check_precision`.

torch is imported inside the functions: the job configs import this module, and `sgeo --help` must stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence

PRECISIONS = ("bf16", "fp16", "fp32")
_TORCH_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}  # name -> torch's dtype attribute


def accepted(*names: str) -> tuple[str, ...]:
    """A job's subset of `PRECISIONS`, checked when the job's module is imported (a misspelt name fails then)."""
    unknown = [name for name in names if name not in PRECISIONS]
    assert not unknown, f"not precisions: {unknown}"
    return names


def check_precision(name: str | None, allowed: Sequence[str] = PRECISIONS) -> str | None:
    """`name` if it is None (the device's default) or one of `allowed`; else a one-line SgeoError."""
    from .errors import SgeoError

    if name not in (None, *allowed):
        raise SgeoError(f"--precision must be one of {', '.join(allowed)}, got {name}")
    return name


def torch_dtype(name: str):
    """The torch dtype of a precision name (bf16 -> torch.bfloat16)."""
    import torch

    return getattr(torch, _TORCH_NAMES[name])


def precision_name(dtype) -> str:
    """The precision name of a torch dtype (torch.bfloat16 -> bf16); its str where it has none."""
    names = {f"torch.{torch_name}": name for name, torch_name in _TORCH_NAMES.items()}
    return names.get(str(dtype), str(dtype))


def default_precision(device: str, allowed: Sequence[str] = PRECISIONS) -> str:
    """What a job computes in on `device` unless told: fp32 on the CPU; bf16 on a GPU (cuda, cuda:N), or fp16
    where the GPU has no bf16 and the job accepts fp16 (training, which does not, stays in bf16)."""
    if not device.startswith("cuda"):
        return "fp32"
    if "fp16" in allowed:
        import torch

        if not torch.cuda.is_bf16_supported():
            return "fp16"
    return "bf16"
