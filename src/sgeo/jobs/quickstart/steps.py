"""The quickstart's steps, each the library call its command makes, and what tells a step is done already:
`Steps` numbers and times them, `data_complete` / `store_complete` / `is_trained` / a scores.json say what a
rerun skips. bench/tower_ablation.py runs its arms with the same pieces."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ...errors import SgeoError
from ...pipeline.names import SYNTHETIC_META
from .recipe import QuickstartRecipe, relations_in_words


def train_stage(recipe: QuickstartRecipe, stage: int, data: Path, model: str, paths: dict, n: int, seed: int,
                out: Path | None = None, branches: str | None = None) -> None:  # fmt: skip
    """`sgeo train` of `stage` on `data` from `model` into `out` (default: paths["stage<stage>"]), from the
    store at paths["store"], with the recipe's schedule; `branches` trains with one tower's tokens only."""
    from ..train import TrainConfig, run_train

    if stage == 1:
        epochs, global_batch, lr, adapter_lr = (
            recipe.stage1_epochs,
            recipe.stage1_global_batch,
            recipe.stage1_lr,
            None,
        )
    else:
        epochs, global_batch, lr = recipe.stage2_epochs, recipe.stage2_global_batch, recipe.stage2_lr
        adapter_lr = recipe.stage2_adapter_lr
    # a small n (smoke runs) gets a global batch it can fill: per-device batch x accumulation
    batch = min(global_batch, n, 8)
    accum = max(1, min(global_batch, n) // batch)
    lora = {} if stage == 1 else {"lora_r": recipe.lora_r, "lora_alpha": recipe.lora_alpha}
    run_train(TrainConfig(
        stage=stage, data=data, out=out or paths[f"stage{stage}"], store=str(paths["store"]), model=model,
        epochs=epochs, lr=lr, adapter_lr=adapter_lr, batch_size=batch, grad_accum=accum,
        max_steps=recipe.max_steps, num_workers=0, save_every=10_000, seed=seed, visual_branches=branches,
        gradient_checkpointing=recipe.gradient_checkpointing, **lora,
    ))  # fmt: skip


def evaluate(recipe: QuickstartRecipe, bench: Path, out: Path, model: str) -> dict:
    """`sgeo eval` of `model` on the synthetic `bench` into `out`, as the recipe asks; returns the scores."""
    from ..eval import EvalConfig, run_eval

    config = EvalConfig(data=bench, out=out, bench="synthetic", model=model, format_hint=recipe.format_hint,
                        batch_size=recipe.eval_batch_size, max_new_tokens=recipe.eval_max_new_tokens)  # fmt: skip
    return run_eval(config, quiet=True)["scores"]


def is_scored(out: Path) -> bool:
    """Whether `evaluate` wrote its scores into `out` (a rerun skips the eval)."""
    from ..score import SCORES_FILE

    return (out / SCORES_FILE).is_file()


def read_scores(out: Path) -> dict:
    """The scores an earlier `evaluate` wrote into `out`."""
    from ..score import SCORES_FILE

    return json.loads((out / SCORES_FILE).read_text())


class Steps:
    """Numbers the steps and prints one line per step (skipped or done, with its time); each use yields
    whether the step has to run."""

    def __init__(self, total: int):
        self.total, self.number, self.timings = total, 0, {}

    def __call__(self, what: str, output: Path | None, done: bool) -> Step:
        self.number += 1
        return Step(self.number, self.total, what, output, self.timings, done)


class Step:
    """Prints one line per step (skipped or done, with its time) and yields whether the step has to run."""

    def __init__(self, number: int, total: int, what: str, output: Path | None, timings: dict, done: bool):
        self.number, self.total, self.what, self.output = number, total, what, output
        self.timings, self.done = timings, done

    def __enter__(self) -> bool:
        self.start = time.perf_counter()
        where = f" -> {self.output}" if self.output is not None else ""
        state = " (done already, skipped)" if self.done else ""
        print(f"[{self.number}/{self.total}] {self.what}{where}{state}", flush=True)
        return not self.done

    def __exit__(self, kind, *_) -> None:
        if kind is None and not self.done:
            seconds = time.perf_counter() - self.start
            self.timings[self.what] = seconds
            print(f"      {self.what}: {seconds:.0f} s", flush=True)


def data_complete(data: Path, n: int, n_eval: int | None, relations: tuple[str, ...] | None) -> bool:
    """Whether the synthetic data is there; data of another generator version or of other sizes is refused,
    not reused or overwritten, since the store and the models in the same workdir were made from it."""
    if not (data / SYNTHETIC_META).is_file():
        return False
    from ...pipeline.json_files import read_json
    from ...synthetic import GENERATOR_VERSION

    meta = read_json(data / SYNTHETIC_META)
    if not isinstance(meta, dict):
        raise SgeoError(f"{data / SYNTHETIC_META} is not the synthetic data's record; pass a new --workdir")
    if meta.get("version") != GENERATOR_VERSION:
        raise SgeoError(
            f"{data.parent} holds a quickstart of synthetic data v{meta.get('version')}, this sgeo writes "
            f"v{GENERATOR_VERSION}; pass a new --workdir (or delete that one)"
        )
    if meta.get("n") != n or (n_eval is not None and meta.get("n_eval") != n_eval):
        raise SgeoError(
            f"{data.parent} holds a quickstart of {meta.get('n')} training and {meta.get('n_eval')} held-out "
            f"images, this run asks for {n} and {n_eval}; pass a new --workdir, or the same --n and --n-eval"
        )
    held = meta.get("relations")
    if held != (None if relations is None else list(relations)):
        held_set = relations_in_words(None if held is None else tuple(held))
        raise SgeoError(f"{data.parent} holds a quickstart that asks {held_set}, this run asks "
                        f"{relations_in_words(relations)}; pass a new --workdir (or the same --full)")  # fmt: skip
    return True


def store_complete(stores: Path) -> bool:
    """Whether the directory holds complete stores (one per tower, as `sgeo extract` writes them)."""
    from ...cache import store_info
    from ...pipeline.feature_set import stores_inside

    inside = stores_inside(str(stores)) or []
    try:
        infos = [store_info(p) for p in inside]
    except SgeoError:
        return False
    return bool(infos) and all(info["shards_committed"] == info["shards_total"] for info in infos)


def is_trained(out: Path) -> bool:
    from ..train.outputs import TRAINABLE_FILE

    return (out / "config.json").is_file() and (out / TRAINABLE_FILE).is_file()
