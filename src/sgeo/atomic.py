"""Writing a local file atomically: a reader (or a crash) sees the old file or the new one, never half of it.

The bytes go to a temp file beside the target (`<name>.<random hex>.tmp`: unique per writer, so concurrent
writers never share one, and `Location.remove_partials` recognises a killed store write's leftovers), then
`os.replace` puts it in place. `fsync=True` flushes the data to disk before the rename, for files whose loss
after a power cut costs work (answers of an evaluation). A failed write leaves no temp file behind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Replace `path` with `data` atomically (its directory must exist)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = False) -> None:
    """Replace `path` with `text` atomically (its directory must exist)."""
    write_bytes(path, text.encode(encoding), fsync=fsync)
