"""Finding the reference parts on this machine: an explicit path (`SGEO_*_PATH`) or the local HF cache.

Nothing is ever downloaded. A part that is not found is a one-line error naming the hub id and the variable
that points at it. A located part keeps two names: the local path it loads from, and the name a saved config
should carry (the hub id when it came from the HF cache, so a model directory stays portable, the absolute
path when the user pointed at a file of their own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SgeoError


@dataclass(frozen=True)
class Located:
    path: str  # what loads: a local file or directory
    name: str  # what a saved config carries: the hub id (HF cache) or the absolute path (explicit)


@dataclass(frozen=True)
class ReferencePart:
    """One part of the reference model: its hub id, and the variable that points at a local copy."""

    what: str
    repo_id: str
    env: str
    filename: str | None = None  # a single file inside the repo (MoGe), else the whole snapshot

    def locate(self, needed_by: str = "spatialgeo-7b") -> Located:
        override = os.environ.get(self.env)
        if override:
            path = Path(override).expanduser()
            if not path.exists():
                raise SgeoError(f"{self.env}={override} does not exist; point it at the {self.what}")
            absolute = str(path.resolve())
            return Located(absolute, absolute)
        cached = from_hf_cache(self.repo_id, self.filename)
        if cached is None:
            raise SgeoError(
                f"{needed_by} needs the {self.what} ({self.repo_id}), which is not in the HF cache "
                f"({hf_hub_cache()}); download it or set {self.env}=/path/to/it"
            )
        return Located(cached, self.repo_id)


REFERENCE_PARTS = {
    "clip": ReferencePart("CLIP tower", "openai/clip-vit-large-patch14-336", "SGEO_CLIP_PATH"),
    "moge": ReferencePart("MoGe checkpoint", "Ruicheng/moge-vitl", "SGEO_MOGE_PATH", filename="model.pt"),
    "llava": ReferencePart("LLaVA-1.5-7B checkpoint", "liuhaotian/llava-v1.5-7b", "SGEO_LLAVA_PATH"),
}
MOGE_FILENAME = "model.pt"  # what every MoGe hub repo calls its checkpoint


def hf_hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def from_hf_cache(repo_id: str, filename: str | None = None) -> str | None:
    """The local snapshot directory (or one file of it) of `repo_id` in the HF cache; None when absent."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if filename:
            return hf_hub_download(repo_id, filename, local_files_only=True)
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # huggingface_hub raises several types for "not in the cache" and for bad repo ids
        return None


def locate_tower(value: str | None, kind: str, base_dir: str | Path | None, needed_by: str) -> Located:
    """A tower as a config names it -> where it loads from.

    `value` is a path (absolute, or relative to the model directory `base_dir`) or a hub id. The reference
    hub ids go through their `SGEO_*_PATH` variable first; any other hub id must be in the HF cache.
    """
    part = REFERENCE_PARTS.get(kind)  # the reference's own towers (CLIP, MoGe) have a variable and a hub id
    if not value:
        if part is None:
            raise SgeoError(
                f"{needed_by}: its {kind} tower names no source; set the tower's source in config.json"
            )
        return part.locate(needed_by)
    candidate = Path(value).expanduser()
    local = candidate if candidate.is_absolute() or base_dir is None else Path(base_dir) / candidate
    if local.exists():
        absolute = str(local.resolve())
        return Located(absolute, absolute)
    if candidate.is_absolute() or value.startswith((".", "~")):
        raise SgeoError(
            f"{needed_by}: the {kind} tower {value} does not exist; fix the path in its config.json"
        )
    if part is not None and value == part.repo_id:
        return part.locate(needed_by)
    cached = from_hf_cache(value, MOGE_FILENAME if kind == "moge" else None)
    if cached is None:
        raise SgeoError(
            f"{needed_by} names the {kind} tower {value!r}, which is neither a path nor in the HF cache "
            f"({hf_hub_cache()}); download it or fix the config"
        )
    return Located(cached, value)


def locate_llm(value: str, base_dir: str | Path | None, needed_by: str) -> Located:
    """A composed model's LLM as its config names it (or `sgeo compose --llm` gives it) -> where it loads from:
    a directory (absolute, or relative to `base_dir`; the current directory when None) or a hub id in the HF
    cache (`snapshot_download(local_files_only=True)`; nothing is downloaded)."""
    candidate = Path(value).expanduser()
    local = candidate if candidate.is_absolute() or base_dir is None else Path(base_dir) / candidate
    if local.is_dir():
        absolute = str(local.resolve())
        return Located(absolute, absolute)
    if local.exists():
        raise SgeoError(f"{needed_by}: the LLM {value} is a file; give the LLM's directory (its config.json)")
    if candidate.is_absolute() or value.startswith((".", "~")) or value.count("/") != 1:
        raise SgeoError(
            f"{needed_by}: the LLM {value} is neither a directory nor a hub id (org/name); give the LLM's directory"
        )
    cached = from_hf_cache(value)
    if cached is None:
        raise SgeoError(
            f"{needed_by} needs the LLM {value!r}, which is not a directory and not in the HF cache "
            f"({hf_hub_cache()}); download it or give its directory"
        )
    return Located(cached, value)
