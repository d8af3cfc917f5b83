"""The page's examples: a few synthetic scenes with a spatial question each, rendered once into `$SGEO_HOME`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ...model.conversation import IMAGE_TOKEN
from ...model.presets import sgeo_home
from ...pipeline.names import SYNTHETIC_QA
from ...synthetic import GENERATOR_VERSION, generate_synthetic

N_EXAMPLES = 4


def example_dir() -> Path:
    return sgeo_home() / "serve" / f"examples-v{GENERATOR_VERSION}"


def examples(n: int = N_EXAMPLES, seed: int = 0) -> list[tuple[Path, str]]:
    """[(image path, question)]: scenes of the synthetic set, each with the first question of its QA."""
    root = example_dir()
    if not (root / SYNTHETIC_QA).exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".examples-", dir=root.parent))
        try:
            generate_synthetic(staging, n, seed, n_eval=0)
            staging.rename(root)  # whole or not at all; when two servers race, the second rename fails
        except OSError:
            if not (root / SYNTHETIC_QA).exists():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    samples = json.loads((root / SYNTHETIC_QA).read_text(encoding="utf-8"))[:n]
    return [
        (root / s["image"], s["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip()) for s in samples
    ]
