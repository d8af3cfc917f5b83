"""`sgeo eval --bench a,b,c` (or a named suite, `--bench spatial`): several benchmarks in one command, one table.

`--data` is a folder holding each benchmark as published, under its command-line name (DATA/cv-bench/,
DATA/pope/, ...); each is answered and scored by `run_eval` into OUT/<name>/ exactly as a run of its own (so
each resumes, and its answers keep their own ids), then OUT/suite.txt, OUT/suite.json and OUT/suite.png set
their figures side by side. Everything a benchmark would refuse (an unknown name, a judge-only benchmark
without --judge, a missing folder) is refused for all of them before any model loads.

The command line sends a `--bench` that `is_suite` here to `run_suite`; `run_eval` takes one benchmark only,
so this module calls down into `eval` and never the other way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import SgeoError


def suite_benchmarks(spec: str) -> list[str]:
    """The benchmarks `--bench` names: a comma-separated list of names and suites, in order, each once."""
    from ..benchmarks import check_bench
    from ..pipeline.names import SUITES

    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise SgeoError(
                f"--bench {spec!r} has an empty name; separate benchmark names with single commas"
            )
        for name in SUITES.get(part, (part,)):
            if check_bench(name) not in names:
                names.append(name)
    return names


def is_suite(spec: str) -> bool:
    from ..pipeline.names import SUITES

    return "," in spec or spec in SUITES


def run_suite(config, loaded: tuple | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run `run_eval` for each benchmark of `config.bench`; returns {"runs": {name: result}, "table", "files"}."""
    from ..benchmarks import get_benchmark, load_benchmark
    from ..scoring.compare import plot_suite, suite_table
    from .eval import run_eval
    from .score import SUITE_FILE, check_judge

    names = suite_benchmarks(config.bench)
    for name in names:  # a judge goes to the benchmarks that have one; a judge-only one without it is refused
        check_judge(name, config.judge if get_benchmark(name).judge is not None else None)
    root = Path(config.data)
    if not root.is_dir():
        raise SgeoError(
            f"--data {root} is not a folder; with several benchmarks it holds each one as <name>/"
        )
    if config.image_root is not None:
        raise SgeoError(
            "--image-root applies to one benchmark; with several, keep each one's images in DATA/<name>/"
        )
    missing = [name for name in names if not (root / name).exists()]
    if missing:
        raise SgeoError(
            f"{root} lacks {', '.join(f'{n}/' for n in missing)}: each benchmark goes under its name"
        )
    for name in names:  # a file of another layout, before the first model loads (read again by its run)
        load_benchmark(name, root / name)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise SgeoError(f"--out {out} is a file; give a directory for the benchmarks' folders and the table")
    runs = {}
    for name in names:
        judge = config.judge if get_benchmark(name).judge is not None else None
        sub = dataclasses.replace(config, bench=name, data=root / name, out=out / name, judge=judge)
        runs[name] = run_eval(sub, loaded=loaded, quiet=quiet)
    scores = {name: result["scores"] for name, result in runs.items()}
    table = suite_table(scores)
    files = {"table": out / "suite.txt", "scores": out / SUITE_FILE, "plot": out / "suite.png"}
    files["table"].write_text(table + "\n", encoding="utf-8")
    files["scores"].write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
    plot_suite(scores, files["plot"])
    if not quiet:
        print(table, flush=True)
        print(f"eval: suite table {files['table']}, {files['scores']}, {files['plot']}", flush=True)
    return {"runs": runs, "table": table, "files": {k: str(v) for k, v in files.items()}}
