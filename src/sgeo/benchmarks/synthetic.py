"""Our synthetic bench: `sgeo data synthetic` writes eval/bench.json in the SpatialRGPT-Bench format, with
images relative to its folder. Asked with sgeo's prompts by default, scored by sgeo's rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sgeo.errors import SgeoError
from sgeo.pipeline.names import SYNTHETIC_BENCH, SYNTHETIC_EVAL

from .spatialrgpt import BENCHMARK as SPATIALRGPT


def bench_json(data: Path) -> Path:
    """The bench file `data` names: itself, or a folder's bench.json or eval/bench.json."""
    data = Path(data)
    if data.is_dir():
        for candidate in (data / SYNTHETIC_BENCH, data / SYNTHETIC_EVAL / SYNTHETIC_BENCH):
            if candidate.is_file():
                return candidate
        raise SgeoError(f"no {SYNTHETIC_BENCH} in {data} nor in {data / SYNTHETIC_EVAL}")
    return data


# SpatialRGPT-Bench's record (its loader, prompts, decodings, rules and judge: the bench has its format) with
# what differs: the name, where --data points, and the sgeo protocol by default (the model it checks was
# trained without the reference's hints)
BENCHMARK = replace(
    SPATIALRGPT,
    name="synthetic",
    title="sgeo synthetic bench",
    default_protocol="sgeo",
    locate=bench_json,
    version="written by `sgeo data synthetic`",
    files="eval/bench.json (SpatialRGPT-Bench format) and eval/images/",
    scoring="sgeo's rules",
)
