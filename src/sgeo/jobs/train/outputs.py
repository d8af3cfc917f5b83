"""What a finished run leaves: the HF model directory (+ `lora/`, `merged/`), `trainable.json`, `loss.png`."""

from __future__ import annotations

from pathlib import Path

from sgeo.errors import SgeoError

from .checkpoints import write_failure, write_json
from .log import log

TRAINABLE_FILE = "trainable.json"  # what the stage trained; its presence marks a finished run


def _final_model(run):
    """The trained model on rank 0 (None elsewhere). Under ZeRO-3 the trainable tensors are gathered and
    loaded into a fresh copy of the starting model (the frozen ones never changed)."""
    if run.engine.zero_optimization_stage() < 3:
        return run.model if run.rank == 0 else None
    import deepspeed

    from sgeo.model import configure_stage, load_model

    state = {}
    for name, param in run.model.named_parameters():
        if param.requires_grad:
            with deepspeed.zero.GatheredParameters([param]):
                if run.rank == 0:
                    state[name] = param.detach().cpu().clone()
    if run.rank != 0:
        return None
    fresh, _ = load_model(run.resolved_model, load_towers=False, dtype=next(iter(state.values())).dtype)
    configure_stage(fresh, run.settings.stage, run.settings.lora)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    if unexpected or set(state) - {n for n, _ in fresh.named_parameters()}:
        raise RuntimeError(f"gathered tensors do not fit the starting model: {unexpected[:3]}")
    return fresh


def save_outputs(run) -> None:
    """HF model dir (+ lora/, merged/), trainable.json, loss.png; rank 0 writes."""
    import torch.distributed as dist

    from sgeo.model.saving import save_trained
    from sgeo.model.stages import stage_adapters, stage_record

    model = _final_model(run)
    if run.rank == 0:
        lora = run.settings.lora
        adapters = stage_adapters(model.config, run.settings.stage)
        if model.config.trained_adapters is not None:  # recorded, so the next stage 1 decides by itself
            model.config.trained_adapters = sorted({*model.config.trained_adapters, *adapters})
        try:
            written = save_trained(model, run.processor, run.out, merge_lora=run.settings.merge_lora)
            write_json(run.out / TRAINABLE_FILE, {"stage_record": stage_record(run.settings.stage, lora),
                                                     "adapters": adapters, "towers_loaded": run.settings.online,
                                                     "trainable": run.trainable})  # fmt: skip
            plot_loss(run.metrics, run.out / "loss.png", f"stage {run.settings.stage}")
        # a full disk: one line, like a checkpoint's (the last checkpoint holds the trained weights)
        except Exception as error:
            detail = write_failure(error)
            if detail is None:
                raise
            raise SgeoError(
                f"cannot write the trained model to {run.out}: {detail}; free space and rerun the same command "
                "(training is done: it loads the last checkpoint and only writes the model)"
            ) from None
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
