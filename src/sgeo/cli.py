"""The `sgeo` command line: one thin typer command per job. Commands parse options, build a config and call
one library function; user errors (`SgeoError`) print one line and exit 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from .cli_groups import MODEL_HELP, cache_app, data_app
from .errors import SgeoError
from .model.stages import LoraSettings
from .pipeline.names import BENCHMARKS, DATASETS, SUITES

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
    batch_size: int = typer.Option(16, help="images per encoder call"),
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
):
    """Encode every image of a dataset once into a Zarr feature store per tower (Ray Data); a tower whose store
    is complete is not run."""
    from .jobs.extract import ExtractConfig, run_extract

    run_extract(
        ExtractConfig(
            dataset=dataset,
            root=root,
            store=store,
            model=model,
            split=split,
            dtype=dtype,
            batch_size=batch_size,
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
        )
    )


@app.command()
def train(
    stage: int = typer.Option(
        ..., help="1: MoGe adapter (a composed model's CLIP adapter too); 2: both adapters + LoRA on the LLM"
    ),
    data: Path = typer.Option(..., help="LLaVA-format training JSON"),
    store: list[str] | None = typer.Option(
        None,
        help="feature stores of the JSON's images: a directory of stores (one per tower, as `sgeo extract` "
        "writes them), or each store, repeated",
    ),
    model: str = typer.Option("tiny", help=MODEL_HELP + " to start from"),
    out: Path = typer.Option(..., help="output directory (HF format)"),
    image_root: Path | None = typer.Option(None, help="image root, for --online"),
    lr: float | None = typer.Option(None, help="learning rate (stage 1: 1e-3, stage 2: 2e-4)"),
    adapter_lr: float | None = typer.Option(None, help="stage 2 adapter learning rate (2e-5)"),
    batch_size: int | None = typer.Option(None, help="per-device batch size"),
    grad_accum: int | None = typer.Option(None, help="gradient accumulation steps"),
    global_batch: int | None = typer.Option(None, help="global batch (stage 1: 256, stage 2: 128)"),
    epochs: float = typer.Option(1.0),
    max_steps: int | None = typer.Option(None),
    model_max_length: int = typer.Option(2048),
    deepspeed: Path | None = typer.Option(None, help="DeepSpeed JSON config (default: shipped ZeRO-2)"),
    zero: int = typer.Option(2, help="ZeRO stage of the shipped config (2 or 3)"),
    save_every: int = typer.Option(500, help="checkpoint every N steps"),
    seed: int = typer.Option(42),
    lora_r: int | None = typer.Option(
        None, help=f"LoRA rank of stage 2 (default {LoraSettings.r}); 0 fine-tunes the whole LLM"
    ),
    lora_alpha: int | None = typer.Option(None, help=f"LoRA alpha (default {LoraSettings.alpha})"),
    clip_drop: float = typer.Option(0.0, help="probability of zeroing an image's CLIP features (stage 2)"),
    group_by_length: bool = typer.Option(False, help="length-grouped batches, as LLaVA"),
    num_workers: int = typer.Option(1, help="data loader workers"),
    attn: str | None = typer.Option(None, help="attention: sdpa, eager or flash_attention_2"),
    merge_lora: bool = typer.Option(False, help="also write the LoRA-merged model"),
    online: bool = typer.Option(False, help="encode pixels in the loop instead of reading the store"),
    image_aspect_ratio: str | None = typer.Option(
        None, help="--online pixels: pad or crop (default: stage 1 crop, stage 2 pad, as LLaVA's scripts)"
    ),
    skip_invalid: bool = typer.Option(False, help="train without the samples that cannot be trained"),
    precision: str | None = typer.Option(
        None, help="bf16 (weights and DeepSpeed's bf16 mode) or fp32 (default: bf16 on GPU, fp32 on CPU)"
    ),
    gradient_checkpointing: bool = typer.Option(
        True, help="recompute the LLM's activations in backward, as LLaVA's scripts (memory for time)"
    ),
    visual_branches: str | None = typer.Option(
        None,
        help="one tower's name (SpatialGeo: clip or moge): an ablation that feeds the LLM that tower's tokens "
        "(the others' are zeros), saved with the model; both: every tower (default: the model's own)",
    ),
):
    """Train stage 1 or 2 with DeepSpeed on cached features."""
    from .jobs.train import TrainConfig, run_train

    run_train(
        TrainConfig(
            stage=stage,
            data=data,
            store=store,
            model=model,
            out=out,
            image_root=image_root,
            lr=lr,
            adapter_lr=adapter_lr,
            batch_size=batch_size,
            grad_accum=grad_accum,
            global_batch=global_batch,
            epochs=epochs,
            max_steps=max_steps,
            model_max_length=model_max_length,
            deepspeed=deepspeed,
            zero=zero,
            save_every=save_every,
            seed=seed,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            clip_drop=clip_drop,
            group_by_length=group_by_length,
            num_workers=num_workers,
            attn=attn,
            merge_lora=merge_lora,
            online=online,
            image_aspect_ratio=image_aspect_ratio,
            skip_invalid=skip_invalid,
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
            visual_branches=visual_branches,
        )
    )


@app.command()
def ask(
    image: Path = typer.Argument(..., help="an image file"),
    question: str | None = typer.Argument(None, help="the question; omit for an interactive session"),
    model: str = typer.Option("tiny", help=MODEL_HELP),
    temperature: float = typer.Option(0.2),
    max_new_tokens: int = typer.Option(256),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of streaming"),
    load_4bit: bool = typer.Option(False, "--load-4bit"),
    load_8bit: bool = typer.Option(False, "--load-8bit"),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
    precision: str | None = typer.Option(
        None, help="bf16, fp16 (GPU) or fp32 (default: bf16 on GPU, fp32 on CPU)"
    ),
    system: str | None = typer.Option(None, help="the system message (default: the model's template's own)"),
):
    """Answer a question about an image, recomputing its features on the fly."""
    from .jobs.ask import AskConfig, run_ask

    run_ask(
        AskConfig(
            image=image,
            question=question,
            model=model,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            as_json=as_json,
            load_4bit=load_4bit,
            load_8bit=load_8bit,
            device=device,
            precision=precision,
            system=system,
        )
    )


@app.command()
def serve(
    model: str = typer.Option("tiny", help=MODEL_HELP),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)"),
    port: int = typer.Option(7860, help="port (0: any free one, printed at start)"),
    image_root: Path | None = typer.Option(None, help="folder whose images API requests may name by path"),
    temperature: float = typer.Option(0.2, help="default temperature (0: greedy)"),
    max_new_tokens: int = typer.Option(256, help="default answer length in tokens"),
    max_request_mb: float = typer.Option(20.0, help="largest request body (and upload) accepted, in MiB"),
    max_image_mb: float = typer.Option(
        128.0, help="most memory one image may take decoded, in MiB (a larger JPEG is decoded reduced)"
    ),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
    load_4bit: bool = typer.Option(False, "--load-4bit"),
    load_8bit: bool = typer.Option(False, "--load-8bit"),
    api_key: str | None = typer.Option(
        None,
        envvar="SGEO_API_KEY",
        show_default=False,
        help="require 'Authorization: Bearer KEY' on /v1 and KEY as the page's password (needed off loopback)",
    ),  # fmt: skip
    no_auth: bool = typer.Option(False, "--no-auth", help="serve a non-loopback --host without a key"),
    max_batch: int = typer.Option(32, help="answers generated together (continuous batching)"),
    max_queue: int = typer.Option(32, help="requests that may wait beyond --max-batch; more get HTTP 429"),
):
    """Web demo (Gradio) and OpenAI-compatible POST /v1/chat/completions for one model, on one server."""
    from .jobs.serve import ServeConfig, run_serve

    run_serve(
        ServeConfig(
            model=model,
            host=host,
            port=port,
            image_root=image_root,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            max_request_mb=max_request_mb,
            max_image_mb=max_image_mb,
            device=device,
            load_4bit=load_4bit,
            load_8bit=load_8bit,
            api_key=api_key,
            no_auth=no_auth,
            max_batch=max_batch,
            max_queue=max_queue,
        )
    )


@app.command("eval")
def evaluate(
    bench: str = typer.Option(
        "synthetic", help=f"{BENCH_HELP}; several: a,b,c or a suite ({', '.join(SUITES)}), one table"
    ),
    data: Path = typer.Option(
        ..., help="the benchmark file or folder, as published; several benchmarks: a folder of <name>/ each"
    ),
    image_root: Path | None = typer.Option(
        None,
        help="image root (default: the benchmark file's folder; SpatialScore: the folder above dataset/)",
    ),
    model: str = typer.Option("tiny", help=MODEL_HELP + ", or openai:NAME with --endpoint"),
    out: Path = typer.Option(..., help="output directory: answers.jsonl, scores.json, scores.png"),
    protocol: str | None = typer.Option(
        None,
        help="reference: prompts and decoding of the benchmark's own eval code (default; SpatialRGPT-Bench: "
        "SpatialGeo's, sampled at temperature 0.2 with --seed); sgeo: greedy sgeo prompts (synthetic default)",
    ),
    multi_image: str = typer.Option(
        "all",
        help="an item with several images: all (one <image> each, as SpatialScore's LLaVA-1.5), tile, first",
    ),
    seed: int = typer.Option(0, help="sampling seed: the same seed gives the same answers"),
    batch_size: int = typer.Option(8),
    max_new_tokens: int | None = typer.Option(None, help="default: the protocol's (sgeo: 64)"),
    limit: int | None = typer.Option(None),
    device: str | None = typer.Option(None),
    format_hint: bool = typer.Option(
        True,
        "--format-hint/--no-format-hint",
        help="sgeo protocol: append the benchmark's answer-format instruction to each question",
    ),
    judge: str | None = typer.Option(
        None,
        help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) to score as SpatialRGPT's judge",
    ),
    judge_model: str | None = typer.Option(None, help="the judge's model name (default: the first it lists)"),
    precision: str | None = typer.Option(
        None, help="bf16, fp16 (GPU) or fp32 (default: bf16 on GPU, fp32 on CPU)"
    ),
    system: str | None = typer.Option(
        None, help="--protocol sgeo: the system message of every prompt (default: the model's template's own)"
    ),
    endpoint: str | None = typer.Option(
        None,
        help="with --model openai:NAME: the OpenAI-compatible API that answers (e.g. https://api.openai.com/v1, "
        "a vLLM server, another sgeo serve); key from OPENAI_API_KEY",
    ),
    concurrency: int | None = typer.Option(
        None, help="--model openai:NAME: requests in flight at once (default 8); 429/5xx are retried"
    ),
):
    """Run a model over a spatial VQA benchmark and score it."""
    from .jobs.eval import EvalConfig, run_eval
    from .jobs.suite import is_suite, run_suite

    # several benchmarks ("a,b,c", a named suite): each its own run_eval, then one table
    run = run_suite if is_suite(bench) else run_eval
    run(
        EvalConfig(
            bench=bench,
            data=data,
            image_root=image_root,
            model=model,
            out=out,
            protocol=protocol,
            multi_image=multi_image,
            seed=seed,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            limit=limit,
            device=device,
            format_hint=format_hint,
            judge=judge,
            judge_model=judge_model,
            precision=precision,
            system=system,
            endpoint=endpoint,
            concurrency=concurrency,
        )
    )


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
