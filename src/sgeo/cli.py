"""The `sgeo` command line: one thin typer command per job. Commands parse options, build a config and call
one library function; user errors (`SgeoError`) print one line and exit 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from .cli_groups import MODEL_HELP, cache_app, data_app
from .cli_options import config_command
from .errors import SgeoError

# the configs whose fields are the commands' options (light modules: `sgeo --help` imports them)
from .jobs.ask import AskConfig
from .jobs.eval import EvalConfig
from .jobs.serve import ServeConfig
from .jobs.train import TrainConfig
from .pipeline.names import BENCHMARKS, DATASETS

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="SpatialGeo: spatial reasoning for multimodal LLMs, as a feature-caching pipeline.",
)
BENCH_HELP = ", ".join(BENCHMARKS)
# `sgeo cache ...` and `sgeo data ...`, the store and dataset tools, live in their own module
app.add_typer(cache_app, name="cache")
app.add_typer(data_app, name="data")


@app.command()
def info(model: str = typer.Option("tiny", help=MODEL_HELP), as_json: bool = typer.Option(False, "--json")):
    """Parameter counts per part, without loading weights."""
    from .jobs.info import model_info

    result = model_info(model)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for part, count in result["parameters"].items():
        print(f"{part:>18}  {count / 1e6:10.2f}M")
    for key, value in result.items():
        if key != "parameters":
            print(f"{key:>18}  {value}")


@app.command()
def extract(
    dataset: str = typer.Option("synthetic", help=", ".join(DATASETS)),
    root: Path = typer.Option(..., help="the dataset's root directory"),
    store: str = typer.Option(
        ..., help="directory (or URL, s3://...) of the feature stores: one per tower, <store>/<tower>"
    ),
    model: str = typer.Option("tiny", help=MODEL_HELP),
    towers: str | None = typer.Option(
        None, help="comma-separated towers whose stores to write (default: all of the model's)"
    ),
    split: str | None = typer.Option(None, help="dataset split (coco: train2017 or val2017)"),
    dtype: str = typer.Option(
        "bf16",
        "--dtype",
        "--encoding",
        help="store encoding: bf16, fp16, fp32, bf16-zstd (lossless), fp8 (lossy)",
    ),
    batch_size: str = typer.Option(
        "16", help="images per encoder call, or auto (GPUs: the largest that fits the free memory)"
    ),
    shard_size: int = typer.Option(64, help="images per store shard"),
    num_cpus: int | None = typer.Option(None, help="CPUs the local Ray cluster may use"),
    num_gpus: int = typer.Option(0, help="GPUs to use (one encoder actor per GPU)"),
    address: str | None = typer.Option(None, help="join an existing Ray cluster instead of starting one"),
    limit: int | None = typer.Option(None, help="only the first N images"),
    image_aspect_ratio: str | None = typer.Option(
        None,
        help="pad or crop (default: the dataset's: crop for llava-pretrain as LLaVA's stage 1, else pad)",
    ),
    autocast: bool = typer.Option(
        True,
        "--autocast/--no-autocast",
        help="on GPU, encode under autocast to the store dtype (CPU: fp32 unless --precision says)",
    ),
    precision: str | None = typer.Option(
        None, help="encoder compute: bf16, fp16 or fp32 autocast on any device (default: see --autocast)"
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="also redo the images that earlier runs recorded as failed"
    ),
    compile: bool = typer.Option(
        False, "--compile", help="torch.compile the towers (one batch shape: a shard's last batch is padded)"
    ),
):
    """Encode every image of a dataset once into a Zarr feature store per tower (Ray Data); a tower whose store
    is complete is not run."""
    from .jobs.extract import ExtractConfig, run_extract
    from .jobs.extract.config import batch_size_option

    run_extract(
        ExtractConfig(
            dataset=dataset,
            root=root,
            store=store,
            model=model,
            split=split,
            dtype=dtype,
            batch_size=batch_size_option(batch_size),
            shard_size=shard_size,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            address=address,
            limit=limit,
            image_aspect_ratio=image_aspect_ratio,
            autocast=autocast,
            precision=precision,
            retry_failed=retry_failed,
            towers=[t for t in towers.split(",") if t] if towers else None,
            compile="inductor" if compile else None,
        )
    )


@app.command()
@config_command(TrainConfig)
def train(config: TrainConfig):
    """Train stage 1 or 2 with DeepSpeed on cached features."""
    from .jobs.train import run_train

    run_train(config)


@app.command()
@config_command(AskConfig)
def ask(config: AskConfig):
    """Answer a question about an image, recomputing its features on the fly."""
    from .jobs.ask import run_ask

    run_ask(config)


@app.command()
@config_command(ServeConfig)
def serve(config: ServeConfig):
    """Web demo (Gradio) and OpenAI-compatible POST /v1/chat/completions for one model, on one server."""
    from .jobs.serve import run_serve

    run_serve(config)


@app.command("eval")
@config_command(EvalConfig)
def evaluate(config: EvalConfig):
    """Run a model over a spatial VQA benchmark and score it."""
    from .jobs.eval import run_eval
    from .jobs.suite import is_suite, run_suite

    # several benchmarks ("a,b,c", a named suite): each its own run_eval, then one table
    run = run_suite if is_suite(config.bench) else run_eval
    run(config)


@app.command()
def compose(
    llm: str = typer.Option(..., help="the LLM: a directory, or a hub id in the HF cache"),
    tower: list[str] = typer.Option(
        ...,
        help="a vision tower, KIND=SOURCE[@LAYERS], repeated in fusion order (SpatialGeo: --tower "
        "clip=CLIP_DIR --tower moge=MOGE_PT); kinds: clip, open_clip, moge, siglip, dinov2, depth_anything; "
        "SOURCE: a directory, a file or a hub id in the HF cache; LAYERS: -2, or -4,-3,-2,-1",
    ),
    fusion: str | None = typer.Option(
        None, help="interleave (one token of each tower in turn; default where the grids match) or concat"
    ),
    out: Path = typer.Option(..., help="the new model directory"),
    template: str | None = typer.Option(
        None,
        help="chat (the LLM's own chat template; default) or vicuna_v1 (LLaVA-1.5's, for an LLM with none)",
    ),
    seed: int = typer.Option(0, help="seed of the adapters' initialisation"),
    clip_adapter: Path | None = typer.Option(
        None, help="a LLaVA-1.5 checkpoint whose trained CLIP adapter fits (stage 1 then trains MoGe's only)"
    ),
):
    """A SpatialGeo model from an LLM and a list of towers: fresh adapters, the LLM referred to (not copied)."""
    from .model.compose import compose as run_compose

    result = run_compose(
        llm, tower, out, template=template, seed=seed, clip_adapter=clip_adapter, fusion=fusion
    )
    for key, value in result.items():
        print(f"{key:>16}  {value}")


@app.command()
def score(
    answers: list[Path] = typer.Argument(..., help="answers.jsonl; with --compare: run folders of sgeo eval"),
    bench: str = typer.Option("spatialrgpt", help=BENCH_HELP),
    out: Path | None = typer.Option(
        None, help="default: the answers file's folder (--compare: the current folder)"
    ),
    judge: str | None = typer.Option(
        None, help="OpenAI-compatible endpoint to score as SpatialRGPT's judge (verdicts cached in ANSWERS)"
    ),
    judge_model: str | None = typer.Option(None, help="the judge's model name (default: the first it lists)"),
    compare: bool = typer.Option(
        False, "--compare", help="set the runs' scores side by side: a table, compare.json and compare.png"
    ),
    published: bool = typer.Option(
        False, "--published", help="--compare: also the published figures of reference models, sources named"
    ),
):
    """Score an existing answers file (no model is run), or compare several scored runs."""
    from .jobs.score import run_compare, run_score

    if compare:
        if judge is not None:
            raise SgeoError("--judge applies to scoring an answers file, not to --compare")
        print(run_compare(answers, out, published=published)["table"])
        return
    if published:
        raise SgeoError("--published applies to --compare: sgeo score --compare RUN_DIR ... --published")
    if len(answers) != 1:
        raise SgeoError(
            f"sgeo score takes one answers file, got {len(answers)}; several runs: sgeo score --compare RUN_DIR ..."
        )
    print(run_score(answers[0], bench, out, judge=judge, judge_model=judge_model)["table"])


@app.command()
def quickstart(
    workdir: Path = typer.Option(Path("sgeo-quickstart"), help="where everything is written"),
    n: int | None = typer.Option(None, help="synthetic training images (default: the recipe's)"),
    seed: int = typer.Option(0),
    n_eval: int | None = typer.Option(None, help="held-out images, 4 questions each (default: the recipe's)"),
    max_steps: int | None = typer.Option(None, help="cap each training stage at N steps (smoke runs)"),
    full: bool = typer.Option(
        False,
        "--full",
        help="every question category (28) instead of the relations ten CPU minutes teach: "
        "the longer run, README 'The quickstart'",
    ),
    branches: bool = typer.Option(
        False,
        "--branches",
        help="also train stage 2 with CLIP tokens only and with MoGe tokens only, and "
        "score both: what each encoder adds (triples stage 2)",
    ),
):
    """The main job end to end on the demo preset: data, extract, stage 1, stage 2, eval, ask."""
    from dataclasses import replace

    from .jobs.quickstart import FULL_QUICKSTART, QUICKSTART, run_quickstart

    given = {k: v for k, v in {"n_eval": n_eval, "max_steps": max_steps}.items() if v is not None}
    recipe = replace(FULL_QUICKSTART if full else QUICKSTART, branches=branches, **given)
    run_quickstart(workdir=workdir, n=n, seed=seed, recipe=recipe)


def _default_to_cpu_accelerator() -> None:
    # DeepSpeed (imported by accelerate/transformers) prints its accelerator guess on stdout unless told;
    # without an NVIDIA device the answer is the CPU. An explicit DS_ACCELERATOR always wins.
    if "DS_ACCELERATOR" not in os.environ and not Path("/dev/nvidiactl").exists():
        os.environ["DS_ACCELERATOR"] = "cpu"


def main(argv: list[str] | None = None) -> None:
    _default_to_cpu_accelerator()
    # the program itself (the `sgeo` script, `python -m sgeo.cli`), not Python code that goes on after main()
    entry = argv is None and sys._getframe(1).f_globals.get("__name__") == "__main__"
    try:
        app(args=argv, prog_name="sgeo")
    except SgeoError as error:
        print(f"error: {error}", file=sys.stderr)
        _exit(2, entry)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        _exit(130, entry)


def _exit(code: int, entry: bool) -> None:
    """End the process after a refusal or an interrupt, without the interpreter's teardown.

    Why: at exit CPython stops daemon threads with pthread_exit when they next take the GIL. One that is in
    torch's C++ code then (the trainer's batch prefetcher, a generation thread) unwinds through a noexcept
    destructor, and the process aborts after the right error line: "terminate called without an active
    exception", rc 134 (2 of 35 refusals; every time with a daemon thread looping on a torch op, see
    tests/test_hostile_inputs.py). Nothing is lost by skipping the teardown: the error unwound through every
    finally block and context manager first (locks released, Ray shut down, process groups destroyed, files
    closed), so only the output buffers are left to flush. In-process callers get SystemExit as before."""
    if not entry:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
