"""The trainer's one logging helper: rank 0 only, written above the progress bar."""

from __future__ import annotations

import os
import sys


def log(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        from tqdm import tqdm

        tqdm.write(f"[sgeo train] {message}", file=sys.stderr)
