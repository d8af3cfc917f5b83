"""`sgeo train`: stage 1 or 2 of SpatialGeo on DeepSpeed, from the feature store (or pixels with --online).

One flat recipe, read top to bottom: `training_settings` (recipe.py: per-stage defaults and the global batch,
checked once), `setup` (setup.py: environment, data, model, engine), `load_checkpoint` (checkpoints.py),
`train` (loop.py), `save_checkpoint`, `save_outputs` (outputs.py), `cleanup` (run.py). What trains is
decided by `sgeo.model.configure_stage`; the vision towers are never constructed when training from the store.

Resuming: every checkpoint (`out/checkpoints/step-NNNNNNN`, DeepSpeed format, trainable tensors and
optimizer states, a digest per file) carries the step and the run's settings; the data order of epoch e
depends only on (seed, e), and every source of randomness in a step is reseeded from (seed, step,
micro-batch, rank). So rerunning a killed command continues from the latest checkpoint and ends with the
weights an uninterrupted run would have.

Output directory (HF format, `load_model(out)` works): config + weights + processor, `lora/` (stage 2),
`merged/` (--merge-lora), `trainable.json`, `train_config.json`, `metrics.jsonl`, `loss.png`, `checkpoints/`.
A run holds it through `train.lock` (folder.py: a second run is refused, a dead one's lock taken over); a
non-empty folder that is not an sgeo run is refused rather than overwritten.
"""

from .environment import LAUNCHER_ENV
from .recipe import STAGE_RECIPES, TrainConfig, TrainSettings, check_config, resolve_batch, training_settings


def __getattr__(name: str):
    # `run_train` on first use: its modules read the store (numpy, zarr, pyarrow), and `sgeo --help` imports
    # this package for TrainConfig, from which it makes `sgeo train`'s options
    if name == "run_train":
        from .run import run_train

        return run_train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LAUNCHER_ENV",
    "STAGE_RECIPES",
    "TrainConfig",
    "TrainSettings",
    "check_config",
    "resolve_batch",
    "run_train",
    "training_settings",
]
