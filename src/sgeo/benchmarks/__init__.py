"""Benchmark files -> `BenchItem`s, each benchmark as its authors publish, prompt and score it.

Every benchmark is one `registry.Benchmark` record in its own module, registered by one line of
`sgeo.pipeline.names.BENCHMARK_MODULES`; `REGISTRY` holds them, and `LOADERS` / `SCORERS` are views of it.
`load_benchmark` reads one (an unknown name is refused listing the known ones). Items carry the question as
shipped (`raw_question`), sgeo's prompt text without `<image>`, the ground truth, and everything the scorer
needs (`qa_info`, `options`, `extra`); `build_prompt` turns an item into what the model is asked.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sgeo.errors import SgeoError

# the registry first: it imports each benchmark module, and those import `registry.Benchmark`
from .registry import (  # isort: skip
    REGISTRY,
    Benchmark,
    build_prompt,
    check_bench,
    check_protocol,
    decoding_for,
    default_protocol,
    get_benchmark,
)
from .common import BenchItem
from .protocols import MULTI_IMAGE, PROTOCOLS, Decoding, Prompt, check_multi_image, model_images, tile_images
from .spatialrgpt import (
    DIRECTION_SUFFIX,
    LLAVA_V1_SYSTEM,
    QUALITATIVE_SUFFIX,
    QUANTITATIVE_SUFFIX,
    answer_suffix,
    load_spatialrgpt,
)
from .spatialscore import CHOICE_SUFFIX, JUDGMENT_SUFFIX, load_spatialscore, source_instruction, split_options

LOADERS = {name: record.loader for name, record in REGISTRY.items()}
SCORERS = {name: record.scorer for name, record in REGISTRY.items()}


def bench_file(bench: str, data: Path) -> Path:
    """The benchmark file (or folder) `data` names for `bench`: itself, or what the benchmark looks for
    in it (synthetic: a folder's bench.json or eval/bench.json)."""
    return get_benchmark(bench).locate(Path(data))


def load_benchmark(bench: str, data: Path) -> list[BenchItem]:
    """Read benchmark `bench` from `data` (a file, or a folder where the benchmark is published as one).

    Question ids must be unique: answers files are keyed by them (a resumed eval skips the ids it has)."""
    record = get_benchmark(bench)
    path = record.locate(Path(data))
    items = record.loader(path)
    twice = [qid for qid, n in Counter(item.question_id for item in items).items() if n > 1]
    if twice:
        raise SgeoError(
            f"{path}: question id {twice[0]!r} is used by more than one item ({len(twice)} ids repeat)"
        )
    return items


def image_root(bench: str, data: Path) -> Path:
    """Default folder that `BenchItem.images` are relative to: the benchmark's image rule applied to the
    data it reads (the file's folder; SpatialScore: the folder above dataset/; images embedded in the
    files: the folder they are unpacked to)."""
    record = get_benchmark(bench)
    return record.image_root(record.locate(Path(data)))


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
    "REGISTRY",
    "SCORERS",
    "BenchItem",
    "Benchmark",
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
    "get_benchmark",
    "image_root",
    "load_benchmark",
    "load_spatialrgpt",
    "load_spatialscore",
    "model_images",
    "source_instruction",
    "split_options",
    "tile_images",
]
