"""The run folder (`--out`): recognised as an sgeo run before anything is written into it, and held by one
run at a time.

- A folder that is not empty and holds neither `train_config.json` (every run writes it before its first
  step) nor `checkpoints/` is someone else's: refused, so their files (a `config.json`...) are never
  overwritten. An sgeo run folder resumes as before.
- `RunLock` is the feature store's writer lock (`sgeo.cache.lock`: an `flock`ed file with the holder's host,
  pid and command, taken over when its process is gone) on `<out>/train.lock`: a second run into the same
  folder is refused in one line naming the holder. Rank 0 holds it for the whole run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sgeo.cache.lock import StoreLock, describe_holder
from sgeo.errors import SgeoError

from .checkpoints import CHECKPOINTS

TRAIN_CONFIG = "train_config.json"
RUN_LOCK = "train.lock"


def check_out_folder(out: Path) -> None:
    """Refuse a non-empty `--out` that is not an sgeo run (one line; nothing is written)."""
    out = Path(out)
    if not out.is_dir() or (out / TRAIN_CONFIG).is_file() or (out / CHECKPOINTS).is_dir():
        return
    others = sorted(p.name for p in out.iterdir() if p.name != RUN_LOCK)  # a lock left by a killed run
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise SgeoError(
            f"--out {out} already holds files that are not an sgeo training run ({shown}); training would "
            "overwrite them: give an empty or new folder (or a previous run's --out to resume it)"
        )


class RunLock(StoreLock):
    """The store's writer lock on `<out>/train.lock` (local disk), refusing at once when it is held."""

    def __init__(self, out: Path):
        super().__init__(str(Path(out).resolve()))
        self.key = RUN_LOCK
        self.out = Path(out)
        self._made: Path | None = None

    def acquire(self) -> None:
        check_out_folder(self.out)
        if not self.out.exists():  # created for the lock; removed again if the run leaves nothing in it
            try:
                self.out.mkdir(parents=True)
            except OSError as error:
                raise SgeoError(
                    f"cannot create --out {self.out}: {error.strerror}; use another --out"
                ) from None
            self._made = self.out
        holder = self._try_local()
        if holder is not None:
            self._remove_if_made()
            raise SgeoError(
                f"--out {self.out} is being trained into by {describe_holder(holder)}; wait for it to finish or use "
                "another --out"
            )

    def release(self) -> None:
        super().release()
        self._remove_if_made()

    def _remove_if_made(self) -> None:
        if self._made is not None:
            with contextlib.suppress(OSError):  # not empty: the run wrote there
                os.rmdir(self._made)
            self._made = None


def lock_out_folder(out: Path) -> contextlib.AbstractContextManager:
    """Checked, then held by rank 0 for the whole run (other ranks write into the same folder under its lock)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return RunLock(out)
