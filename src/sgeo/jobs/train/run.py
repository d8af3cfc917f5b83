"""`run_train`: setup, resume if a checkpoint exists, train, save, clean up."""

from __future__ import annotations

import os

from .checkpoints import load_checkpoint
from .environment import LAUNCHER_ENV, SOCKET_ENV
from .folder import lock_out_folder
from .loop import train
from .outputs import save_outputs
from .recipe import TrainConfig, check_config
from .setup import Run, setup


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
    launcher = {key: os.environ.get(key) for key in (*LAUNCHER_ENV, *SOCKET_ENV)}
    try:
        check_config(config)  # before the lock: a bad option creates nothing
        with lock_out_folder(config.out):  # one run per --out at a time
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
