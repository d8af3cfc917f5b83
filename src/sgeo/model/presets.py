"""Named models: the preset registry. Every `--model` option takes a preset name or a model directory.

- `tiny`: seeded random-init CLIP, MoGe (ViT-S/14) and a 2-layer Llama at 112 px (`random_init`), written
  under `$SGEO_HOME` (default `~/.cache/sgeo`) on first use.
- `demo`: the quickstart's, written the same way: tiny with sin-cos tower position embeddings and a 128-wide
  fan-in-init LLM.
- `ref-dims`: the same, at the reference's shapes and dtypes (CLIP ViT-L/14-336, MoGe ViT-L, a bf16 Llama-7B-
  shaped LLM with `$SGEO_REF_DIMS_LAYERS` layers, default 2, and LLaVA's tokenizer), to rehearse on CPU.
- `spatialgeo-7b`: the reference parts (LLaVA-1.5-7B with CLIP ViT-L/14-336, MoGe ViT-L), from local paths or
  the HF cache (see `hub.py`). A missing part is an error naming it and how to point at it; never a fallback
  to `tiny`.
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
DEMO_VERSION = "demo-v1"  # likewise for the demo recipe (`random_init.sizes.DEMO`)
REF_DIMS_VERSION = "ref-dims-v2"  # + the LLM depth: homes never mix models of different depths
REF_DIMS_LAYERS_ENV = "SGEO_REF_DIMS_LAYERS"


def sgeo_home() -> Path:
    return Path(os.environ.get("SGEO_HOME", Path.home() / ".cache" / "sgeo")).expanduser()


def materialise(version: str, write: Callable[[Path], Path]) -> Path:
    """A random-init preset's model directory, written once per home (atomic, safe across processes).

    `write(root)` writes every part under `root` and returns the model directory, `root / "spatialgeo"`."""
    root = sgeo_home() / "presets" / version
    model_dir = root / "spatialgeo"
    if model_dir.exists():
        return model_dir
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Ray workers and training ranks may all ask at once
        if not model_dir.exists():
            staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root.parent))
            try:
                if write(staging) != staging / model_dir.name:
                    raise RuntimeError(
                        f"the {version} writer must write its model to <root>/{model_dir.name}"
                    )
                staging.rename(root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return model_dir


def _tiny() -> Path:
    from .random_init.writer import write_random_init

    return materialise(TINY_VERSION, write_random_init)


def _demo() -> Path:
    from functools import partial

    from .random_init.sizes import DEMO
    from .random_init.writer import write_random_init

    return materialise(DEMO_VERSION, partial(write_random_init, sizes=DEMO))


def ref_dims_layers() -> int:
    """The LLM depth of the ref-dims preset: `$SGEO_REF_DIMS_LAYERS`, default 2 (Vicuna-7B has 32)."""
    raw = os.environ.get(REF_DIMS_LAYERS_ENV, "").strip() or "2"
    if not raw.isdigit() or int(raw) < 1:
        raise SgeoError(
            f"{REF_DIMS_LAYERS_ENV}={raw!r} is not a positive number of LLM layers; unset it or use e.g. 2"
        )
    return int(raw)


def ref_dims_version() -> str:
    """The home directory name of the ref-dims preset at the current depth."""
    return f"{REF_DIMS_VERSION}-{ref_dims_layers()}l"


def _ref_dims() -> Path:
    from functools import partial

    from .random_init.sizes import ref_dims
    from .random_init.writer import write_random_init

    writer = partial(write_random_init, sizes=ref_dims(ref_dims_layers()))
    return materialise(ref_dims_version(), writer)


def _ref_dims_geometry():
    from .random_init.configs import random_init_config
    from .random_init.sizes import ref_dims

    where = sgeo_home() / "presets" / ref_dims_version() / "spatialgeo"
    return random_init_config(ref_dims(ref_dims_layers())), {"preset": "ref-dims", "directory": str(where),
                                                   "written": where.is_dir()}  # fmt: skip


def _spatialgeo_7b() -> Path:
    from .hub import REFERENCE_PARTS

    return Path(REFERENCE_PARTS["llava"].locate().path)


@dataclass(frozen=True)
class Preset:
    name: str
    directory: Callable[[], Path]  # the model directory, written first where the preset writes one
    # () -> (SpatialGeoConfig, description): a random-init preset's geometry without writing its files
    geometry: Callable | None = None
    layout: str | None = None  # the layout its directory must have (spatialgeo-7b: LLaVA-1.5 itself)

    def wrong_layout(self, found: str) -> str:
        return (
            f"SGEO_LLAVA_PATH must point at LLaVA-1.5-7B itself (liuhaotian/llava-v1.5-7b), not at a {found} "
            "directory; pass that directory as --model instead"
        )


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        # what each is: the module's docstring
        Preset("tiny", _tiny),
        Preset("demo", _demo),
        Preset("ref-dims", _ref_dims, geometry=_ref_dims_geometry),
        Preset("spatialgeo-7b", _spatialgeo_7b, layout="reference"),
    )
}


def preset_names() -> list[str]:
    return sorted(PRESETS)
