"""DeepSpeed JSON configs: the shipped ZeRO-2/3 files (or the user's), with "auto" values filled from a run."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from sgeo.errors import SgeoError

from .recipe import EPS, Resolved


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
        # the weights load in this dtype (train.py); DeepSpeed's bf16 mode keeps fp32 master weights of them
        "bf16.enabled": resolved.precision == "bf16",
    }
    if config.get("scheduler", {}).get("type") == "WarmupCosineLR":  # else `cosine_schedule` (no "scheduler")
        decided["scheduler.params.total_num_steps"] = resolved.total_steps
        decided["scheduler.params.warmup_num_steps"] = max(1, resolved.warmup_steps)
    filled = {  # "auto" only
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
