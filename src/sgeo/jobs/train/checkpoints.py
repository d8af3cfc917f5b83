"""Training checkpoints: DeepSpeed's format, written with a digest per file, read without unpickling code.

`out/checkpoints/step-NNNNNNN/` holds DeepSpeed's files (trainable tensors, optimizer states), sgeo's
`trainer_state.json` (step, the run's settings, data position) and `digests.json` (sha256 of every file, written
after all ranks have written theirs); `latest` names the newest complete one. On resume every file is checked
against its digest and loaded with `torch.load(weights_only=True)`, allowing only the few plain DeepSpeed
classes these files hold: a crafted pickle, a flipped byte or a cut file is refused in one line, never run.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from sgeo import atomic
from sgeo.errors import SgeoError, one_line

from .log import log

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
DIGESTS = "digests.json"
KEEP_CHECKPOINTS = 2
# Options a rerun may change without changing what it computes (everything else must match to resume).
RESUME_FREE = ("out", "save_every", "num_workers", "merge_lora", "attn", "gradient_checkpointing")
# Filled from the data and the model once they are read (so compared only after they are known).
DERIVED = (
    "num_samples",
    "steps_per_epoch",
    "total_steps",
    "warmup_steps",
    "image_aspect_ratio",
    "model_parts",
)


# -- safe loading ----------------------------------------------------------------------------------
def _allowed_globals() -> list:
    """Plain-data classes DeepSpeed puts into its optimizer files (a loss scaler, an enum, a dataclass)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str, map_location=None):
    """`torch.load` of a checkpoint file with weights_only=True; anything else it would need is refused."""
    import torch

    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        needs = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"needs {needs.group(1)} to load" if needs else "holds objects other than tensors"
        raise SgeoError(
            f"checkpoint file {path} {what}, which sgeo never unpickles; delete its checkpoint folder to start over"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        first = one_line(error, 160, first=True)
        raise SgeoError(
            f"checkpoint file {path} is damaged ({first}); delete its checkpoint folder to resume from an earlier "
            "one or start over"
        ) from None


def make_loads_safe(engine) -> None:
    """Route every DeepSpeed checkpoint read of `engine` through `safe_load` (its default loader runs
    `torch.load(weights_only=False)`, which executes whatever a crafted file asks)."""
    checkpoint_engine = engine.checkpoint_engine
    if checkpoint_engine is None or checkpoint_engine.load is _safe_engine_load:  # routed already
        return
    checkpoint_engine.load = _safe_engine_load


def _safe_engine_load(path, map_location=None):
    """DeepSpeed's `CheckpointEngine.load(path, map_location)`, through `safe_load`."""
    return safe_load(path, map_location)


# -- digests ---------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_digests(directory: Path) -> None:
    digests = {p.name: _sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != DIGESTS}
    write_json(directory / DIGESTS, digests)


def verify_digests(directory: Path) -> None:
    """Refuse a checkpoint whose files differ from what was written (a flipped byte, a cut or missing file)."""
    try:
        digests = json.loads((directory / DIGESTS).read_text())
    except (OSError, ValueError):
        raise SgeoError(
            f"checkpoint {directory} has no readable {DIGESTS} (it was not completely written, or by an older "
            "sgeo); delete it to resume from an earlier checkpoint or start over"
        ) from None
    for name, digest in sorted(digests.items()):
        path = directory / name
        if not path.is_file():
            raise SgeoError(f"checkpoint file {path} is missing; delete {directory} to start over")
        if _sha256(path) != digest:
            raise SgeoError(
                f"checkpoint file {path} is not what was written (sha256 differs: damaged on disk?); delete "
                f"{directory} to resume from an earlier checkpoint or start over"
            )


# -- trainer state ---------------------------------------------------------------------------------
def latest_tag(checkpoints: Path) -> str | None:
    pointer = checkpoints / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not re.fullmatch(r"step-\d{7}", tag):
        raise SgeoError(f"{pointer} names {tag[:40]!r}, not a checkpoint; delete it to start over")
    return tag if (checkpoints / tag / TRAINER_STATE).is_file() else None


def read_trainer_state(directory: Path) -> dict:
    try:
        state = json.loads((directory / TRAINER_STATE).read_text())
        if not isinstance(state, dict) or not isinstance(state.get("resolved"), dict):
            raise ValueError("not a trainer state")
        int(state["step"])
        return state
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SgeoError(
            f"{directory / TRAINER_STATE} is damaged; delete {directory} to resume from an earlier checkpoint or "
            "start over"
        ) from None


def latest_checkpoint(out: str | Path) -> tuple[Path, dict] | None:
    """(directory, the settings it was trained with) of the latest checkpoint under `out`; None: none yet."""
    checkpoints = Path(out) / CHECKPOINTS
    tag = latest_tag(checkpoints)
    return None if tag is None else (checkpoints / tag, read_trainer_state(checkpoints / tag)["resolved"])


def check_resumable(settings, latest: tuple[Path, dict] | None) -> None:
    """Refuse to resume the `latest` checkpoint (`latest_checkpoint`) if different settings made it (before
    anything is loaded)."""
    if latest is None:
        return
    directory, saved = latest
    if isinstance(
        saved.get("store"), str
    ):  # written when --store named one store: the same run as a list of one
        saved = {**saved, "store": [saved["store"]]}
    now = json.loads(json.dumps(asdict(settings)))
    for key in now:
        # a key the checkpoint lacks names an option added since it was written: what it decides is recorded in
        # the settings the checkpoint has (e.g. `lora` for --lora-r), which are compared
        if key in RESUME_FREE or key in DERIVED or key not in saved:
            continue
        if saved.get(key) != now[key]:
            raise SgeoError(
                f"{directory} was trained with {key}={saved.get(key)!r}, this run has {now[key]!r}; "
                "rerun with the same options to resume, or use another --out"
            )


# -- save and load ---------------------------------------------------------------------------------
def save_checkpoint(run) -> None:
    """A DeepSpeed checkpoint of the trainable tensors and optimizer states, with the step, the run's
    settings and the data position; its digests and `latest` are written only once every rank has written its
    part. A full disk is one line: the previous checkpoint stays the latest."""
    import torch.distributed as dist

    tag = f"step-{run.step:07d}"
    directory = run.checkpoints / tag
    epoch, in_epoch = divmod(run.step, run.plan.steps_per_epoch)
    # "resolved": the key trainer_state.json has always had for the settings (older checkpoints resume)
    state = {"step": run.step, "epoch": epoch, "step_in_epoch": in_epoch, "resolved": asdict(run.settings),
             "trainable": run.trainable}  # fmt: skip
    try:
        if run.rank == 0:
            directory.mkdir(parents=True, exist_ok=True)
            write_json(directory / TRAINER_STATE, state)
        run.engine.save_checkpoint(str(run.checkpoints), tag=tag, client_state={"sgeo": state}, save_latest=False,
                                   exclude_frozen_parameters=True)  # fmt: skip
        dist.barrier()
        if run.rank == 0:
            write_digests(directory)
            write_text_atomic(run.checkpoints / LATEST, tag)
    except (OSError, RuntimeError) as error:
        detail = write_failure(error)
        if detail is None:
            raise
        raise SgeoError(
            f"cannot write checkpoint {directory}: {detail}; free space and rerun the same command (it resumes "
            "from the last complete checkpoint)"
        ) from None
    if run.rank == 0:
        tags = sorted(p.name for p in run.checkpoints.glob("step-*") if p.is_dir())
        for old in tags[: max(0, tags.index(tag) + 1 - KEEP_CHECKPOINTS)]:
            shutil.rmtree(run.checkpoints / old, ignore_errors=True)
    dist.barrier()


def write_failure(error: BaseException) -> str | None:
    """What went wrong when `error` is a failed write (disk full, file too large), else None. torch.save reports
    one as a RuntimeError of its zip writer, safetensors as a SafetensorError naming the OS error."""
    if isinstance(error, OSError):
        return error.strerror or "the write failed"
    text = str(error)
    if type(error).__name__ == "SafetensorError" and "I/O error" in text:
        return text.split("I/O error:", 1)[1].split("(os error", 1)[0].strip() or "the write failed"
    if isinstance(error, RuntimeError) and any(
        mark in text for mark in ("inline_container", "unexpected pos", "file write failed", "No space")
    ):
        return "the write failed"
    return None


def load_checkpoint(run) -> bool:
    """Continue from the latest checkpoint under out/checkpoints, if there is one."""
    tag = latest_tag(run.checkpoints)
    if tag is None:
        return False
    directory = run.checkpoints / tag
    verify_digests(directory)
    make_loads_safe(run.engine)
    path, client = run.engine.load_checkpoint(str(run.checkpoints), tag=tag, load_module_strict=False)
    if path is None or not isinstance(client, dict) or "sgeo" not in client:
        raise SgeoError(f"cannot load checkpoint {directory}; delete it to start over")
    state = client["sgeo"]
    run.step = int(state["step"])
    if run.rank == 0:  # a killed run may have logged steps after its last checkpoint
        run.metrics = [m for m in read_metrics(run.out / "metrics.jsonl") if m["step"] <= run.step]
        write_metrics(run.out / "metrics.jsonl", run.metrics)
    log(f"resumed from {directory}: step {run.step}, epoch {state['epoch']}, "
        f"step {state['step_in_epoch']} of {run.plan.steps_per_epoch} in that epoch")  # fmt: skip
    return True


# -- small file helpers ----------------------------------------------------------------------------
def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    atomic.write_text(path, text)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill
    return records


def write_metrics(path: Path, metrics: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(m) + "\n" for m in metrics))
