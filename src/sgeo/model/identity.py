"""Which model answered: a cheap digest of a resolved model's files, recorded beside every eval answer.

The config files are hashed whole, the weight files by name and size (hashing 14 GB per eval start would cost
more than the answers), and the towers by where they were found. Two directories holding the same files give
the same digest wherever they lie; another checkpoint, a retrained adapter or other towers give another.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .tower_fingerprint import WEIGHT_SUFFIXES


def _describe_files(directory: Path) -> list:
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "checkpoints" not in p.parts):
        name = path.relative_to(directory).as_posix()
        if path.suffix in WEIGHT_SUFFIXES:
            entries.append((name, path.stat().st_size))
        elif path.suffix == ".json":
            entries.append((name, hashlib.sha256(path.read_bytes()).hexdigest()))
    return entries


def _describe_tower(path: str) -> list:
    tower = Path(path)
    return _describe_files(tower) if tower.is_dir() else [(tower.name, tower.stat().st_size)]


def model_identity(resolved) -> str:
    """A sha256 hex digest naming the model `resolved` loads (layout, its files, its base, its towers)."""
    parts = {
        "layout": resolved.layout,
        "files": _describe_files(resolved.directory),
        "base": _describe_files(resolved.base) if resolved.base is not None else None,
    }
    parts.update({name: _describe_tower(located.path) for name, located in resolved.towers.items()})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
