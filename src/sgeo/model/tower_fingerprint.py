"""The encoder fingerprint: everything that decides the numbers in a feature store.

Weights are identified by hashing the tower checkpoint files where they were located (never by the name a
config gives them), so a trainer can check a store without loading, or even constructing, the towers. At
reference size that is ~3 GB of reading, so digests are remembered per (path, size, mtime) in
`$SGEO_HOME/weight-digests.json`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

from sgeo import atomic

DIGESTS_FILE = "weight-digests.json"
# The files that hold a checkpoint's weights (safetensors, PyTorch pickles): what the fingerprint hashes, what
# model_identity sizes and what extract counts as the bytes a worker loads.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _digests_path() -> Path:
    from .presets import sgeo_home

    return sgeo_home() / DIGESTS_FILE


def _remembered(key: str) -> str | None:
    try:
        return json.loads(_digests_path().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _remember(key: str, digest: str) -> None:
    path = _digests_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # ranks and actors may hash at once
            try:
                known = json.loads(path.read_text())
            except (OSError, ValueError):
                known = {}
            known[key] = digest
            atomic.write_text(path, json.dumps(known, indent=0, sort_keys=True))
    except OSError:
        pass  # a read-only home only costs the next run a rehash


def _hash_path(path: str) -> str:
    """A file by its content alone (the HF cache names it by its blob hash); a directory by its weight files'
    relative names and contents."""
    digest = hashlib.sha256()
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and _is_weight(p))
    for file in files:
        if root.is_dir():
            digest.update(file.relative_to(root).as_posix().encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _is_weight(path: Path) -> bool:
    return path.suffix in WEIGHT_SUFFIXES or path.name == "config.json"


def hash_weights(path: str) -> str:
    """sha256 of a checkpoint file or of a directory's weight files (+ config.json)."""
    root = Path(path).resolve()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and _is_weight(p))
    stamp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()
    digest = _remembered(key)
    if digest is None:
        digest = _hash_path(str(root))
        _remember(key, digest)
    return digest


def tower_fingerprint(spec, path: str) -> dict:
    """What decides one tower's stored numbers: its kind's fields, with its weights' digest."""
    from .towers.registry import tower_class

    return tower_class(spec.kind).fingerprint(spec, hash_weights(path))


def store_fingerprint(towers: dict[str, dict], preprocessing: dict, dtype: str) -> dict:
    """The fingerprint of a store holding the features of `towers` ({name: tower_fingerprint}); a store holds
    one tower's (a feature store per tower), so changing one tower re-encodes that tower alone."""
    return {"towers": towers, "preprocessing": preprocessing, "dtype": dtype}


def towers_fingerprint(resolved, preprocessing: dict, dtype: str, names: list[str] | None = None) -> dict:
    """The fingerprint of a store holding the features of the towers `names` (default: every tower) of the
    ResolvedModel `resolved` (`sgeo extract` writes one store per tower: one name each)."""
    specs = {spec.name: spec for spec in resolved.config.towers}
    names = list(specs) if names is None else names
    towers = {name: tower_fingerprint(specs[name], resolved.towers[name].path) for name in names}
    return store_fingerprint(towers, preprocessing, dtype)


def stored_towers(fingerprint: dict) -> dict[str, dict]:
    """{tower name: its fingerprint} of a store; a store written before towers were a list holds `clip` and
    `moge` at the top level, and serves both of them."""
    if "towers" in fingerprint:
        return fingerprint["towers"]
    return {name: fingerprint[name] for name in ("clip", "moge") if name in fingerprint}
