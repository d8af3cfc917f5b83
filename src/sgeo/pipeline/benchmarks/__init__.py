"""Spatial VQA benchmark files -> `BenchItem`s: SpatialRGPT-Bench, SpatialScore and our synthetic bench.

Each loader is registered by name in `LOADERS`; `load_benchmark` looks one up and raises `SgeoError`
listing the known names otherwise. Items carry the question as shipped (`raw_question`), sgeo's prompt
text without `<image>`, the ground truth, and everything the scorer needs (`qa_info`, `options`, `extra`);
`protocols` turns an item into what the model is asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sgeo.errors import SgeoError

from .common import BenchItem
from .protocols import (
    MULTI_IMAGE,
    PROTOCOLS,
    Decoding,
    Prompt,
    build_prompt,
    check_multi_image,
    check_protocol,
    decoding_for,
    default_protocol,
    model_images,
    tile_images,
)
from .spatialrgpt import (
    DIRECTION_SUFFIX,
    LLAVA_V1_SYSTEM,
    QUALITATIVE_SUFFIX,
    QUANTITATIVE_SUFFIX,
    answer_suffix,
    load_spatialrgpt,
)
from .spatialscore import CHOICE_SUFFIX, JUDGMENT_SUFFIX, load_spatialscore, source_instruction, split_options

LOADERS: dict[str, Callable[[Path], list[BenchItem]]] = {
    "spatialrgpt": load_spatialrgpt,
    "spatialscore": load_spatialscore,
    # our generator writes eval/bench.json in the SpatialRGPT-Bench format, images relative to its folder
    "synthetic": load_spatialrgpt,
}


def check_bench(bench: str) -> str:
    """Return `bench` if it names a known benchmark, else raise listing the known ones."""
    if bench not in LOADERS:
        raise SgeoError(f"unknown benchmark {bench!r}; known: {', '.join(sorted(LOADERS))}")
    return bench


def bench_file(bench: str, data: Path) -> Path:
    """The benchmark file `data` names: itself or, for `synthetic`, a folder's bench.json or eval/bench.json."""
    data = Path(data)
    if bench == "synthetic" and data.is_dir():
        for candidate in (data / "bench.json", data / "eval" / "bench.json"):
            if candidate.is_file():
                return candidate
        raise SgeoError(f"no bench.json in {data} nor in {data / 'eval'}")
    return data


def load_benchmark(bench: str, data: Path) -> list[BenchItem]:
    """Read benchmark `bench` from file `data` (for `synthetic`, also the folder holding eval/bench.json).

    Question ids must be unique: answers files are keyed by them (a resumed eval skips the ids it has)."""
    path = bench_file(check_bench(bench), data)
    items = LOADERS[bench](path)
    twice = [qid for qid, n in Counter(item.question_id for item in items).items() if n > 1]
    if twice:
        raise SgeoError(
            f"{path}: question id {twice[0]!r} is used by more than one item ({len(twice)} ids repeat)"
        )
    return items


def image_root(bench: str, data: Path) -> Path:
    """Default folder that `BenchItem.images` are relative to: the benchmark file's folder. SpatialScore
    ships its files in `dataset/` with image paths "./dataset/..." relative to the folder holding it (where
    its scripts run), so for a file in a folder named `dataset` it is that folder's parent."""
    folder = bench_file(check_bench(bench), data).parent
    return folder.parent if bench == "spatialscore" and folder.name == "dataset" else folder


__all__ = [
    "CHOICE_SUFFIX",
    "DIRECTION_SUFFIX",
    "JUDGMENT_SUFFIX",
    "LLAVA_V1_SYSTEM",
    "LOADERS",
    "MULTI_IMAGE",
    "PROTOCOLS",
    "QUALITATIVE_SUFFIX",
    "QUANTITATIVE_SUFFIX",
    "BenchItem",
    "Decoding",
    "Prompt",
    "answer_suffix",
    "bench_file",
    "build_prompt",
    "check_bench",
    "check_multi_image",
    "check_protocol",
    "decoding_for",
    "default_protocol",
    "image_root",
    "load_benchmark",
    "model_images",
    "source_instruction",
    "split_options",
    "tile_images",
]
