"""The encoder fingerprint: everything that decides the numbers in a feature store.

Weights are identified by hashing the tower checkpoint files, so a trainer can check a store without
loading (or even constructing) the towers.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from .configuration import SpatialGeoConfig


@lru_cache(maxsize=16)
def _hash_path(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and _is_weight(p))
    for file in files:
        digest.update(file.relative_to(root if root.is_dir() else root.parent).as_posix().encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _is_weight(path: Path) -> bool:
    return path.suffix in (".safetensors", ".bin", ".pt", ".pth") or path.name == "config.json"


def hash_weights(path: str | None) -> str:
    """sha256 of a checkpoint file or of a directory's weight files (+ config.json)."""
    if path is None or not Path(path).exists():
        return f"unresolved:{path}"
    stat = Path(path).stat()
    return _hash_path(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


def encoder_fingerprint(config: SpatialGeoConfig, preprocessing: dict, dtype: str) -> dict:
    """A JSON-able dict; two stores may share rows only if their fingerprints are equal."""
    from .modeling import resolve_tower_path

    clip_path = resolve_tower_path(config, config.clip_path, "clip_path", must_exist=False)
    moge_path = resolve_tower_path(config, config.moge_path, "moge_path", must_exist=False)
    return {
        "clip": {
            "backend": config.clip_backend,
            "model_name": config.clip_model_name,
            "weights": hash_weights(clip_path),
            "layer": config.clip_layer,
            "shape": [config.num_patches, config.clip_hidden_size],
        },
        "moge": {
            "backbone": config.moge_backbone,
            "weights": hash_weights(moge_path),
            "layers": config.moge_layers,
            "input": config.moge_input,
            "shape": [config.moge_layers, config.num_patches, config.moge_hidden_size],
        },
        "preprocessing": preprocessing,
        "dtype": dtype,
    }
