"""One record per benchmark, and the one registry of them.

A benchmark is one module of this package defining `BENCHMARK`, its `Benchmark` record (stating only what
differs from the defaults: `protocols.greedy_protocols`, `protocols.suffix_prompt` and the like build the
common cases), and one line in `sgeo.pipeline.names.BENCHMARK_MODULES`. Everything that depends on the
benchmark asks its record: the loader (the files as published), the prompt of each protocol and its
decoding, the scorer (the authors' rules), where the images are, whether a judge applies, and the
benchmark's own summary figures.

The registry is built when this package is imported: a module without a `BENCHMARK`, a record missing its
scorer (a required field) or naming a protocol sgeo does not have stops that import with a `TypeError`
naming the benchmark, before any model is loaded or any answer generated.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.pipeline.names import BENCHMARK_MODULES

from .common import BenchItem
from .protocols import PROTOCOLS, Decoding, Prompt, PromptBuilder, check_multi_image, verbatim_prompt

Record = dict[str, Any]  # one answers.jsonl line


def as_given(data: Path) -> Path:
    return Path(data)


def file_folder(located: Path) -> Path:
    """The default image rule: image paths are relative to the benchmark file's folder (or to the folder
    `--data` names, for a benchmark read from a folder)."""
    located = Path(located)
    return located if located.is_dir() else located.parent


@dataclass(frozen=True)
class Benchmark:
    """Everything sgeo knows about one benchmark. Fields without a default are required."""

    name: str  # the command-line name
    title: str  # as its authors write it, for messages and tables
    loader: Callable[[Path], list[BenchItem]]  # the located file (or folder) -> items, as published
    decoding: Mapping[str, Decoding]  # protocol -> its decoding; the keys are the protocols it has
    scorer: Callable[[Record], Record]  # one answers record -> {"kind", "success", ...} by the authors' rules
    # (item, protocol, multi_image, format_hint) -> Prompt; the default asks the published question as it is
    prompt: PromptBuilder = verbatim_prompt
    default_protocol: str = "reference"
    locate: Callable[[Path], Path] = as_given  # --data -> what the loader reads
    image_root: Callable[[Path], Path] = file_folder  # the located data -> folder the image paths are under
    multi_image: bool = False  # items may have several images (--multi-image applies and is recorded)
    # A judge behind --judge: `judge(record, ChatJudge)` -> (score, asked) or None where the rules decide.
    judge: Callable[[Record, Any], tuple[Record, bool] | None] | None = None
    judge_required: bool = False  # no rules at all: refused without --judge, before any answer is generated
    summary: Callable[[list[Record]], Record] | None = None  # scored records -> the authors' headline figures
    # for the README table and --help
    version: str = ""
    files: str = ""
    scoring: str = ""

    def __post_init__(self) -> None:
        for name in ("loader", "prompt", "scorer", "locate", "image_root"):
            if not callable(getattr(self, name)):
                raise TypeError(f"benchmark {self.name!r}: {name} must be callable")
        for name in ("judge", "summary"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise TypeError(f"benchmark {self.name!r}: {name} must be callable or None")
        unknown = [p for p in self.decoding if p not in PROTOCOLS]
        if unknown or not self.decoding:
            raise TypeError(f"benchmark {self.name!r}: protocols {list(self.decoding)}; sgeo has {PROTOCOLS}")
        if self.default_protocol not in self.decoding:
            raise TypeError(
                f"benchmark {self.name!r}: default protocol {self.default_protocol!r} not its own"
            )
        if self.judge_required and self.judge is None:
            raise TypeError(f"benchmark {self.name!r} requires a judge but defines none")

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(self.decoding)


def build_registry(modules: Mapping[str, str] = BENCHMARK_MODULES) -> dict[str, Benchmark]:
    """name -> the `BENCHMARK` record of module `modules[name]` of this package, each checked."""
    registry: dict[str, Benchmark] = {}
    for name, module_name in modules.items():
        module = importlib.import_module(f"{__package__}.{module_name}")
        record = getattr(module, "BENCHMARK", None)
        if not isinstance(record, Benchmark):
            raise TypeError(f"{module.__name__} defines no BENCHMARK record for benchmark {name!r}")
        if record.name != name:
            raise TypeError(f"{module.__name__}.BENCHMARK is named {record.name!r}, registered as {name!r}")
        registry[name] = record
    return registry


REGISTRY: dict[str, Benchmark] = build_registry()


def check_bench(bench: str) -> str:
    """Return `bench` if it names a registered benchmark, else raise listing the known ones (one line)."""
    if bench not in REGISTRY:
        raise SgeoError(f"unknown benchmark {bench!r}; known: {', '.join(sorted(REGISTRY))}")
    return bench


def get_benchmark(bench: str) -> Benchmark:
    return REGISTRY[check_bench(bench)]


# A protocol for one benchmark, as its record gives it (`protocols` holds what all benchmarks share; it
# looks no record up, so the benchmark modules can import it)


def check_protocol(protocol: str, bench: str | None = None) -> str:
    """`protocol` if it is one (of `bench`'s, when given), else a one-line refusal naming the known ones."""
    known = PROTOCOLS if bench is None else tuple(get_benchmark(bench).decoding)
    if protocol not in known:
        of = "" if bench is None else f" for {bench}"
        raise SgeoError(f"unknown protocol {protocol!r}{of}; known: {', '.join(known)}")
    return protocol


def default_protocol(bench: str) -> str:
    """`reference` for the published benchmarks; `sgeo` for our synthetic one, which has no other."""
    return get_benchmark(bench).default_protocol


def decoding_for(bench: str, protocol: str, max_new_tokens: int | None = None) -> Decoding:
    """The decoding a protocol uses for a benchmark; `max_new_tokens` overrides its length."""
    decoding = get_benchmark(bench).decoding[check_protocol(protocol, bench)]
    if max_new_tokens is None:
        return decoding
    return Decoding(decoding.sample, decoding.temperature, decoding.top_k, max_new_tokens)


def build_prompt(
    item: BenchItem, bench: str, protocol: str, multi_image: str = "all", format_hint: bool = True
) -> Prompt:
    """The prompt `protocol` gives `item` of `bench`; `format_hint` False drops sgeo's answer-format line."""
    check_multi_image(multi_image)
    return get_benchmark(bench).prompt(item, check_protocol(protocol, bench), multi_image, format_hint)
