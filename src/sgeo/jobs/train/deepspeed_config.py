"""DeepSpeed JSON configs: the shipped ZeRO-2/3 files (or the user's), with "auto" values filled from a run."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from sgeo.errors import SgeoError

from .recipe import EPS, TrainSettings


def deepspeed_config(settings: TrainSettings, model_config) -> dict:
    """The shipped ZeRO-2/3 JSON (or --deepspeed's), with its "auto" values filled from the run."""
    if settings.deepspeed:
        config = json.loads(Path(settings.deepspeed).read_text())
        source = settings.deepspeed
    else:
        source = f"sgeo/configs/zero{settings.zero}.json"
        config = json.loads(resources.files("sgeo.configs").joinpath(f"zero{settings.zero}.json").read_text())
    hidden = model_config.hidden_size
    config.setdefault("optimizer", {"type": "AdamW", "params": {}})
    # the run decides these: "auto" (or absent) is filled, any other value must agree
    decided = {
        "train_micro_batch_size_per_gpu": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accum,
        "train_batch_size": settings.global_batch,
        "optimizer.params.lr": settings.lr,
        "optimizer.params.betas": list(settings.betas),
        "optimizer.params.eps": EPS,
        "optimizer.params.weight_decay": settings.weight_decay,
        # the weights load in this dtype (setup.py); DeepSpeed's bf16 mode keeps fp32 master weights of them
        "bf16.enabled": settings.precision == "bf16",
    }
    if config.get("scheduler", {}).get("type") == "WarmupCosineLR":  # else `cosine_schedule` (no "scheduler")
        decided["scheduler.params.total_num_steps"] = settings.total_steps
        decided["scheduler.params.warmup_num_steps"] = max(1, settings.warmup_steps)
    filled = {  # "auto" only
        # On CPU, torch's AdamW: DeepSpeed's CPU FusedAdam keeps beta1^t, beta2^t as a running product in a
        # process-wide object, so a resumed run (pow instead of product) drifts from an uninterrupted one.
        "optimizer.params.torch_adam": settings.device == "cpu",
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
    if settings.device == "cpu" and _get(config, "optimizer.params.torch_adam") is None:
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
