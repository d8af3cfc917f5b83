"""Loading a model to answer with, as `sgeo ask`, `sgeo eval` and `sgeo serve` do: the device and dtype they
run on (`pick_device`), and the model and processor on it, optionally with a 4/8-bit LLM (`load_for_inference`).
"""

from __future__ import annotations

import re

from ..errors import SgeoError
from ..precision import accepted, check_precision, default_precision, torch_dtype

INFERENCE_PRECISIONS = accepted("bf16", "fp16", "fp32")  # fp16 on a GPU only (see pick_device)
# the help of the options that reach `pick_device` (sgeo ask, eval, serve)
DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when available)"
PRECISION_HELP = "bf16, fp16 (GPU) or fp32 (default: bf16 on GPU, fp16 where it has no bf16, fp32 on CPU)"


def pick_device(device: str | None = None, precision: str | None = None):
    """(device, dtype): cuda when available, else cpu, in the device's default precision (`sgeo.precision`);
    `precision` (bf16, fp16, fp32) overrides the dtype on either."""
    import torch

    check_precision(precision, INFERENCE_PRECISIONS)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise SgeoError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SgeoError(f"--device {device} was asked for but no CUDA GPU is visible; use --device cpu")
    if device == "cpu" and precision == "fp16":
        raise SgeoError("--precision fp16 needs a GPU (CPU kernels are bf16 or fp32); use bf16 on CPU")
    return device, torch_dtype(precision or default_precision(device, INFERENCE_PRECISIONS))


def load_for_inference(
    resolved_model, device: str | None = None, load_4bit: bool = False, load_8bit: bool = False,
    precision: str | None = None,
):  # fmt: skip
    """(model, processor) on the chosen device, towers attached; optionally with a 4/8-bit LLM.
    `resolved_model`: a `ResolvedModel`, or what `resolve_model` takes (a preset's name, a directory)."""
    from ..model import load_model

    if load_4bit and load_8bit:
        raise SgeoError("choose one of --load-4bit and --load-8bit")
    bits = 4 if load_4bit else 8 if load_8bit else None
    if bits and precision:
        raise SgeoError(f"--load-{bits}bit computes in fp16; drop --precision")
    device, dtype = pick_device(device, precision)
    if bits is None:
        return load_model(resolved_model, dtype=dtype, device=device)
    if not device.startswith("cuda"):
        raise SgeoError(f"--load-{bits}bit needs a CUDA GPU (bitsandbytes); on {device}, drop the flag")
    import torch

    from ..model.quantization import quantize_language_model

    spatialgeo, processor = load_model(resolved_model, dtype=torch.float16, load_towers=False)
    quantize_language_model(spatialgeo, bits, device)
    spatialgeo.load_towers()
    return spatialgeo, processor
