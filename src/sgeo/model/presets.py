"""Named models. Every `--model` option takes a preset name or a model directory.

- `tiny`: seeded random-init parts written under `$SGEO_HOME` (default `~/.cache/sgeo`) on first use.
- `spatialgeo-7b`: the reference parts (CLIP ViT-L/14-336, MoGe ViT-L, LLaVA-1.5-7B), from local paths or the
  HF cache. A missing part is an error naming it and how to point at it; never a fallback to `tiny`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import SgeoError

TINY_VERSION = "tiny-v1"  # bump when the tiny recipe changes, so old homes are not reused


def sgeo_home() -> Path:
    return Path(os.environ.get("SGEO_HOME", Path.home() / ".cache" / "sgeo")).expanduser()


@dataclass(frozen=True)
class ReferencePart:
    """One downloadable part of the reference model: where to look, and how the user points at it."""

    what: str
    repo_id: str
    env: str
    filename: str | None = None  # a single file inside the repo (MoGe), else the whole snapshot

    def locate(self) -> str:
        override = os.environ.get(self.env)
        if override:
            if not Path(override).exists():
                raise SgeoError(f"{self.env}={override} does not exist; point it at the {self.what}")
            return override
        from huggingface_hub import hf_hub_download, snapshot_download

        try:
            if self.filename:
                return hf_hub_download(self.repo_id, self.filename, local_files_only=True)
            return snapshot_download(self.repo_id, local_files_only=True)
        except Exception:  # huggingface_hub raises several types for "not in the cache"
            raise SgeoError(
                f"spatialgeo-7b needs the {self.what} ({self.repo_id}), which is not in the HF cache; "
                f"download it or set {self.env}=/path/to/it"
            ) from None


REFERENCE_PARTS = {
    "clip": ReferencePart("CLIP tower", "openai/clip-vit-large-patch14-336", "SGEO_CLIP_PATH"),
    "moge": ReferencePart("MoGe checkpoint", "Ruicheng/moge-vitl", "SGEO_MOGE_PATH", filename="model.pt"),
    "llava": ReferencePart("LLaVA-1.5-7B checkpoint", "liuhaotian/llava-v1.5-7b", "SGEO_LLAVA_PATH"),
}


def _materialise_tiny() -> Path:
    """The tiny preset's model directory, written once per home (atomic, safe across processes)."""
    from .tiny import write_tiny

    root = sgeo_home() / "presets" / TINY_VERSION
    model_dir = root / "spatialgeo"
    if model_dir.exists():
        return model_dir
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{TINY_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Ray workers and training ranks may all ask at once
        if not model_dir.exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{TINY_VERSION}-", dir=root.parent))
            try:
                write_tiny(staging)
                staging.rename(root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return model_dir


PRESETS: dict[str, Callable[[], Path | None]] = {
    "tiny": _materialise_tiny,
    "spatialgeo-7b": lambda: None,  # assembled from the reference parts at load time
}


def is_preset(name: str) -> bool:
    return name in PRESETS


def resolve_model_dir(model: str) -> Path | None:
    """A preset name or a directory -> the model directory (None for `spatialgeo-7b`, built on load)."""
    if model in PRESETS:
        return PRESETS[model]()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise SgeoError(
            f"--model {model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a directory"
        )
    if not (path / "config.json").exists():
        raise SgeoError(
            f"{path} has no config.json; point --model at a model directory written by sgeo or LLaVA"
        )
    return path


def load_config(model: str):
    """The model's `SpatialGeoConfig` without loading any weights (used by `info` and fingerprints)."""
    from .reference import reference_7b_config

    if model == "spatialgeo-7b":
        return reference_7b_config()
    from .configuration import SpatialGeoConfig

    directory = resolve_model_dir(model)
    try:
        return SpatialGeoConfig.from_pretrained(directory)
    except (ValueError, OSError, KeyError, TypeError) as error:
        raise SgeoError(
            f"{directory}/config.json is not a SpatialGeo config ({error}); use a dir written by sgeo"
        ) from None


def load_model(
    model: str,
    *,
    load_towers: bool = True,
    dtype=None,
    device: str | None = None,
    attn_implementation: str | None = None,
):
    """(model, processor) for a preset name or a model directory, through the real loaders."""
    from .modeling import SpatialGeoForCausalLM
    from .processing import SpatialGeoProcessor
    from .reference import is_reference_checkpoint, load_reference

    if model == "spatialgeo-7b":
        parts = {name: part.locate() for name, part in REFERENCE_PARTS.items()}
        spatialgeo, processor = load_reference(
            parts["llava"], clip_path=parts["clip"], moge_path=parts["moge"], dtype=dtype
        )
    else:
        directory = resolve_model_dir(model)
        if is_reference_checkpoint(directory):
            # A LoRA release is applied over the LLaVA-1.5 it was trained from.
            base = os.environ.get(REFERENCE_PARTS["llava"].env)
            spatialgeo, processor = load_reference(directory, model_base=base, dtype=dtype)
        else:
            kwargs = {"dtype": dtype} if dtype is not None else {}
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            spatialgeo = SpatialGeoForCausalLM.from_pretrained(directory, **kwargs)
            processor = SpatialGeoProcessor.from_pretrained(directory)
            from .saving import LORA_DIR

            lora_dir = directory / LORA_DIR
            if lora_dir.is_dir():
                from peft import PeftModel

                spatialgeo.language_model = PeftModel.from_pretrained(spatialgeo.language_model, lora_dir)
    if device:
        spatialgeo.to(device)
    if load_towers:
        try:
            spatialgeo.load_towers()
        except (FileNotFoundError, OSError) as error:
            raise SgeoError(f"cannot load the vision towers of {model}: {error}") from None
    spatialgeo.eval()
    return spatialgeo, processor


def load_processor(model: str):
    """The model's processor alone: no weights are read (a reference checkpoint reads only its tokenizer)."""
    from .processing import PROCESSOR_FILE, SpatialGeoProcessor, build_image_processor

    if model == "spatialgeo-7b":
        from transformers import AutoTokenizer

        from .reference import reference_7b_config

        tokenizer = AutoTokenizer.from_pretrained(REFERENCE_PARTS["llava"].locate(), use_fast=True)
        config = reference_7b_config()
        return SpatialGeoProcessor(
            build_image_processor(config.image_size), tokenizer, config.num_image_tokens
        )
    directory = resolve_model_dir(model)
    if (directory / PROCESSOR_FILE).exists():
        return SpatialGeoProcessor.from_pretrained(directory)
    return load_model(model, load_towers=False)[1]  # a reference checkpoint: its tokenizer needs the import


def load_encoders(model: str, *, dtype=None, device: str | None = None):
    """(towers, processor): only what encoding pixels needs, without the LLM (e.g. Ray encoder actors).

    `towers.encode_images` is the same road as `SpatialGeoForCausalLM.encode_images`.
    """
    from .modeling import resolve_tower_path
    from .towers import VisionTowers

    if model == "spatialgeo-7b":
        from .reference import reference_7b_config

        config = reference_7b_config(
            clip_path=REFERENCE_PARTS["clip"].locate(), moge_path=REFERENCE_PARTS["moge"].locate()
        )
    else:
        config = load_config(model)
    try:
        towers = VisionTowers(
            config,
            resolve_tower_path(config, config.clip_path, "clip_path"),
            resolve_tower_path(config, config.moge_path, "moge_path"),
        )
    except (FileNotFoundError, OSError) as error:
        raise SgeoError(f"cannot load the vision towers of {model}: {error}") from None
    towers.to(device=device or "cpu", dtype=dtype)
    return towers, load_processor(model)
