"""Our synthetic bench: `sgeo data synthetic` writes eval/bench.json in the SpatialRGPT-Bench format, with
images relative to its folder. Asked with sgeo's prompts by default, scored by sgeo's rules."""

from __future__ import annotations

from pathlib import Path

from sgeo.errors import SgeoError
from sgeo.pipeline.scoring import judge_record, score_item

from .protocols import GREEDY_SGEO
from .registry import Benchmark
from .spatialrgpt import REFERENCE_DECODING, load_spatialrgpt, spatialrgpt_prompt


def bench_json(data: Path) -> Path:
    """The bench file `data` names: itself, or a folder's bench.json or eval/bench.json."""
    data = Path(data)
    if data.is_dir():
        for candidate in (data / "bench.json", data / "eval" / "bench.json"):
            if candidate.is_file():
                return candidate
        raise SgeoError(f"no bench.json in {data} nor in {data / 'eval'}")
    return data


BENCHMARK = Benchmark(
    name="synthetic",
    title="sgeo synthetic bench",
    loader=load_spatialrgpt,
    prompt=spatialrgpt_prompt,
    # sgeo by default (the model it checks was trained without the reference's hints); reference as for
    # SpatialRGPT-Bench, whose format it has
    decoding={"reference": REFERENCE_DECODING, "sgeo": GREEDY_SGEO},
    default_protocol="sgeo",
    scorer=score_item,
    locate=bench_json,
    judge=judge_record,
    version="written by `sgeo data synthetic`",
    files="eval/bench.json (SpatialRGPT-Bench format) and eval/images/",
    scoring="sgeo's rules",
)
