"""`sgeo cache ...` (inspect, verify and plan feature stores) and `sgeo data ...` (built-in datasets)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .cli_options import MODEL_HELP

cache_app = typer.Typer(no_args_is_help=True, help="Inspect, verify and plan feature stores.")
data_app = typer.Typer(no_args_is_help=True, help="Built-in datasets.")


@data_app.command("synthetic")
def data_synthetic(
    out: Path = typer.Option(..., help="output directory"),
    n: int = typer.Option(200, help="training images"),
    seed: int = typer.Option(0),
    n_eval: int | None = typer.Option(None, help="held-out images (default: max(20, n // 5))"),
    image_size: int = typer.Option(224, help="side of the square images, in pixels"),
    overwrite: bool = typer.Option(
        False, help="replace what an earlier run wrote in OUT (only the generator's own files and folders)"
    ),
):
    """Render the synthetic spatial dataset (images, stage-1 captions, stage-2 QA, held-out bench)."""
    from .synthetic import generate_synthetic

    summary = generate_synthetic(
        out, n, seed, n_eval=n_eval, image_size=(image_size, image_size), overwrite=overwrite
    )
    print(json.dumps(summary, indent=2, default=str))


@data_app.command("coco")
def data_coco(
    root: Path = typer.Option(..., help="the COCO root (annotations/captions_<split>.json, <split>/)"),
    split: str = typer.Option("train2017", help="train2017 or val2017"),
    out: Path = typer.Option(..., help="the LLaVA-format training JSON to write"),
):
    """Write COCO captions as LLaVA-format training JSON (image fields = the store's image ids)."""
    from .pipeline.datasets import write_training_json

    count = write_training_json("coco", root, out, split=split)
    print(f"wrote {count} caption samples to {out}")


def _stores(store: str) -> list[str]:
    """A store, or each store of a directory of stores (one per tower, as `sgeo extract` writes them); anything
    else as given, for the cache tools to refuse in their own words."""
    from .pipeline.feature_set import stores_inside

    return stores_inside(store) or [store]


@cache_app.command("info")
def cache_info(store: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")):
    """Counts, fingerprint, dtype, bytes and statuses of a store (of each store of a directory of stores)."""
    from .cache import store_info

    stores = _stores(store)
    result = store_info(stores[0]) if stores == [store] else {path: store_info(path) for path in stores}
    print(json.dumps(result, indent=2, default=str) if as_json else _format_mapping(result))


@cache_app.command("verify")
def cache_verify(
    store: str = typer.Argument(...),
    repair: bool = typer.Option(
        False, help="drop the commit markers of damaged shards, so that a rerun of extract redoes them"
    ),
):
    """Check every committed shard of a store (of each store of a directory of stores); exit 1 on a problem."""
    from .cache import repair_store, verify_store

    failed = False
    for path in _stores(store):
        if repair:
            result = repair_store(path)
            if result["dropped"]:
                print(f"{path}: dropped the commit markers of shards {result['dropped']}; rerun the same "
                      "`sgeo extract` to redo them")  # fmt: skip
            problems = result["problems"]
        else:
            problems = verify_store(path)
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        failed = failed or bool(problems)
        if not problems:
            print(f"{path}: ok")
    if failed:
        raise typer.Exit(1)


@cache_app.command("plan")
def cache_plan(
    model: str = typer.Option("spatialgeo-7b", help=MODEL_HELP),
    images: int = typer.Option(..., help="number of images"),
    dtype: str | None = typer.Option(None, "--dtype", "--encoding", help="one encoding (default: every one)"),
    gpus: int = typer.Option(8, help="GPUs that read the store, for the read rate at LLaVA-1.5's pace"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Per store encoding: bytes per image, total, and the read rate N GPUs need at LLaVA-1.5's pace."""
    from .jobs.info import format_plan, store_plan

    plan = store_plan(model, images, dtype, gpus)
    print(json.dumps(plan, indent=2) if as_json else format_plan(plan))


def _format_mapping(mapping: dict, indent: int = 0) -> str:
    lines = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(_format_mapping(value, indent + 2))
        else:
            lines.append(" " * indent + f"{key}: {value}")
    return "\n".join(lines)
