"""`sgeo eval`: run a model over a spatial VQA benchmark, append each answer as it goes, then score.

Items come from `load_benchmark`, their prompts and decoding from the chosen protocol (`reference`: the
benchmark's own evaluation code; `sgeo`: greedy, sgeo's prompts; see `benchmarks.protocols`).
Each batch is left-padded generation from pixels (the model's own towers); an item may show several images.
Every answer is appended to `answers.jsonl` at once, so a killed eval resumes where it stopped: question
ids already in the file are skipped, and sampled answers come from per-item seeds, so the resumed run gives
what an uninterrupted one would. An unreadable image or an item too long for the model is recorded with
the reason instead of an answer. Scoring is the `score` job's, on the whole file.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cli_options import MODEL_HELP, option
from ..errors import SgeoError
from ..inference.loading import DEVICE_HELP, PRECISION_HELP, load_for_inference, pick_device
from ..inference.options import check_fits_context
from ..pipeline.answers import ANSWERS_FILE, answer_record, append_answer, read_answers, rewrite_answers
from ..pipeline.names import BENCHMARKS, SUITES
from .remote import DEFAULT_CONCURRENCY

BATCH_SIZE = 8  # items generated together (--batch-size)
# The options that change an answer, declared once: every answers.jsonl record carries them, and a run
# resumed into the same --out with any of them different is refused (its answers would be mixed with, or
# taken from, answers asked another way). `seed` only when the protocol samples; `multi_image` only for
# SpatialScore (the one benchmark with items of several images); `model` is the answering model's identity
# ("openai:NAME@API_BASE" for a model behind an endpoint, see jobs.remote); `precision` the compute dtype (bf16
# and fp32 answer differently; None for an endpoint's model); `system` the --system message (None: the
# template's). Not among them: batch size (per-item seeds), --limit, --image-root (the same files elsewhere),
# the judge, and the device itself. The template is the model's own, so `model` covers it.
ANSWER_OPTIONS = ("protocol", "seed", "model", "max_new_tokens", "format_hint", "multi_image", "precision",
                  "system")  # fmt: skip
# what records of older sgeo versions, which did not record an option, were made with
_LEGACY = {"protocol": "sgeo", "system": None}


@dataclass(kw_only=True)
class EvalConfig:
    """The `sgeo eval` options: each field is one (`sgeo.cli_options`)."""

    bench: str = option(
        "synthetic",
        help=f"{', '.join(BENCHMARKS)}; several: a,b,c or a suite ({', '.join(SUITES)}), one table",
    )
    data: Path = option(
        help="the benchmark file or folder, as published; several benchmarks: a folder of <name>/ each"
    )
    image_root: Path | None = option(
        None,
        help="image root (default: the benchmark file's folder; SpatialScore: the folder above dataset/)",
    )
    model: str = option("tiny", help=MODEL_HELP + ", or openai:NAME with --endpoint")
    out: Path = option(help="output directory: answers.jsonl, scores.json, scores.png")
    protocol: str | None = option(  # None: reference, but sgeo for the synthetic bench
        None,
        help="reference: prompts and decoding of the benchmark's own eval code (default; SpatialRGPT-Bench: "
        "SpatialGeo's, sampled at temperature 0.2 with --seed); sgeo: greedy sgeo prompts (synthetic default)",
    )
    multi_image: str = option(  # what the model gets from an item with several images
        "all",
        help="an item with several images: all (one <image> each, as SpatialScore's LLaVA-1.5), tile, first",
    )
    seed: int = option(0, help="sampling seed: the same seed gives the same answers")
    batch_size: int = BATCH_SIZE
    # None: the protocol's (reference: 128 SpatialRGPT, 1024 SpatialScore)
    max_new_tokens: int | None = option(None, help="default: the protocol's (sgeo: 64)")
    limit: int | None = None
    device: str | None = option(None, help=DEVICE_HELP)
    # sgeo protocol: the benchmark's answer-format instruction after each question. Off for a model trained
    # only on synthetic QA, which never saw those instructions.
    format_hint: bool = option(
        True,
        help="sgeo protocol: append the benchmark's answer-format instruction to each question",
    )
    judge: str | None = option(  # scores as SpatialRGPT's GPT-4 judge
        None,
        help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) to score as SpatialRGPT's judge",
    )
    judge_model: str | None = option(None, help="the judge's model name (default: the first it lists)")
    precision: str | None = option(None, help=PRECISION_HELP)  # None: sgeo.precision.default_precision
    system: str | None = option(  # None: the template's own
        None, help="--protocol sgeo: the system message of every prompt (default: the model's template's own)"
    )
    endpoint: str | None = option(  # the model behind it: jobs.remote
        None,
        help="with --model openai:NAME: the OpenAI-compatible API that answers (e.g. https://api.openai.com/v1, "
        "a vLLM server, another sgeo serve); key from OPENAI_API_KEY",
    )
    concurrency: int | None = option(  # None: remote's default
        None,
        help=f"--model openai:NAME: requests in flight at once (default {DEFAULT_CONCURRENCY}); 429/5xx are "
        "retried",
    )


def run_eval(config: EvalConfig, loaded: tuple | None = None, quiet: bool = False) -> dict[str, Any]:
    """Answer every item not yet in `out/answers.jsonl`, then score the file.

    `loaded` is an optional (model, processor) already in memory; otherwise `config.model` is loaded, and only
    if something is left to answer. Returns `score_answers`' result.

    One benchmark: several ("a,b,c", a named suite) are `suite.run_suite`'s, which calls this for each.
    """
    from ..benchmarks import (
        build_prompt,
        check_bench,
        check_multi_image,
        check_protocol,
        decoding_for,
        default_protocol,
        get_benchmark,
        image_root,
        load_benchmark,
    )
    from .score import check_judge, score_answers

    for name in ("batch_size", "max_new_tokens", "limit", "concurrency"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise SgeoError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    bench = check_bench(config.bench)
    protocol = check_protocol(config.protocol or default_protocol(bench), bench)
    check_multi_image(config.multi_image)
    if protocol == "reference" and not config.format_hint:
        raise SgeoError("--no-format-hint applies to --protocol sgeo; the reference protocol keeps its hints")
    if protocol == "reference" and config.system is not None:
        raise SgeoError(
            "--system applies to --protocol sgeo; the reference protocol asks with the benchmark's own system prompt"
        )
    check_judge(bench, config.judge)  # a judge where none applies, or none where only a judge scores
    remote = _check_remote(config, loaded)  # None: a local model
    decoding = decoding_for(bench, protocol, config.max_new_tokens)
    items = load_benchmark(bench, config.data)[: config.limit]
    prompts = {
        item.question_id: build_prompt(item, bench, protocol, config.multi_image, config.format_hint)
        for item in items
    }
    if config.system is not None:  # the sgeo protocol's prompts have none of their own
        prompts = {qid: dataclasses.replace(prompt, system=config.system) for qid, prompt in prompts.items()}
    root = Path(config.image_root) if config.image_root is not None else image_root(bench, config.data)
    _check_images_exist(items, prompts, root)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise SgeoError(f"--out {out} is a file; give a directory for answers.jsonl and the scores")
    out.mkdir(parents=True, exist_ok=True)
    answers = out / ANSWERS_FILE
    from ..model import resolve_model
    from ..model.identity import model_identity
    from ..precision import precision_name

    resolved_model = resolve_model(config.model) if loaded is None and remote is None else None
    if remote is not None:
        dtype = None  # the endpoint's own, unknown here: the model's identity stands for it
    else:
        dtype = pick_device(config.device, config.precision)[1] if loaded is None else loaded[0].dtype
    run = {
        "protocol": protocol,
        **({"seed": config.seed} if decoding.sample else {}),
        # who answers: a rerun with another model must not mix into these answers
        **({"model": model_identity(resolved_model)} if resolved_model is not None else {}),
        **({"model": remote.identity} if remote is not None else {}),
        "max_new_tokens": decoding.max_new_tokens,
        "format_hint": config.format_hint,
        **({"multi_image": config.multi_image} if get_benchmark(bench).multi_image else {}),
        "precision": None if dtype is None else precision_name(dtype),
        "system": config.system,
    }
    assert set(run) <= set(ANSWER_OPTIONS), "declare every recorded option in ANSWER_OPTIONS"
    done = _answered(_without_image_errors(answers), run, answers)
    todo = [item for item in items if item.question_id not in done]
    say = (lambda *_: None) if quiet else (lambda text: print(text, flush=True))
    say(
        f"eval: {len(items)} items of {config.data} (protocol {protocol}): {len(items) - len(todo)} already "
        f"answered in {answers}, {len(todo)} to answer"
    )
    if blind := sum(not prompts[item.question_id].images for item in todo):
        say(
            f"eval: {blind} items have no <image> in their human turn; as in the reference, they get no image"
        )
    if todo and remote is not None:
        from .remote import answer_remote

        recorded = {**run, "model_name": str(config.model)}
        concurrency = config.concurrency or DEFAULT_CONCURRENCY
        answer_remote(remote, todo, prompts, root, answers, decoding, concurrency, recorded, say)
    elif todo:
        model, processor = (
            loaded
            if loaded is not None
            else load_for_inference(resolved_model, config.device, precision=config.precision)
        )
        check_fits_context(decoding.max_new_tokens, model, processor)
        recorded = {**run, "model_name": str(config.model)}
        answer_items(model, processor, todo, prompts, root, answers, decoding, config.batch_size, recorded)
    judge = None
    if config.judge is not None:
        from ..scoring import ChatJudge

        judge = ChatJudge(config.judge, config.judge_model)
    result = score_answers(answers, bench, out, judge=judge)
    say(result["table"])
    if skipped := result["scores"]["overall"].get("skipped"):
        say(
            f"eval: {skipped} items did not fit the model's model_max_length with one <image> per image; "
            "--multi-image tile or first shows each of them as one image"
        )
    say(f"eval: answers {answers}; scores {result['files']['scores']}, {result['files']['plot']}")
    return result


def _check_remote(config: EvalConfig, loaded: tuple | None):
    """The remote model of `--model openai:NAME --endpoint URL` (None for a local one), refusing in one line
    the options that apply to one kind only."""
    from .remote import remote_model

    remote = remote_model(config.model, config.endpoint)
    if remote is None:
        if config.concurrency is not None:
            raise SgeoError(
                "--concurrency applies to a model behind an API (--model openai:NAME --endpoint URL)"
            )
        return None
    if loaded is not None:
        raise SgeoError("a model already loaded cannot answer as openai:; pass no loaded model")
    for name in ("device", "precision"):
        if getattr(config, name) is not None:
            raise SgeoError(f"--{name} applies to a local model; {config.model} runs where its endpoint runs")
    return remote


def _answered(records: list[dict[str, Any]], run: dict[str, Any], answers: Path) -> set[str]:
    """The question ids already answered, after checking they were answered the way this run asks: every
    option of `ANSWER_OPTIONS` that this run records is the same (two models' answers, or answers asked
    with other prompts or lengths, are never scored together)."""
    unrecorded = object()
    for record in records:
        # records of older sgeo versions carry no protocol (they were sgeo's greedy prompts) and none of the
        # options added since: those cannot be told apart, so they count as different
        was = {key: record.get(key, _LEGACY.get(key, unrecorded)) for key in run}
        if was != run:
            changed = next(key for key in run if was[key] != run[key])
            if changed == "model":
                what = "another model"
            elif was[changed] is unrecorded:
                what = f"{changed} unrecorded (an older sgeo)"
            else:
                what = f"{changed}={was[changed]!r}"
            raise SgeoError(
                f"{answers} holds answers made with {what}, this run has {changed}={_short(run[changed])}; "
                f"use another --out, or the same model and options ({_option(changed)} as before)"
            )
    return {str(r["question_id"]) for r in records if "question_id" in r}


def _option(name: str) -> str:
    """The command-line option behind an `ANSWER_OPTIONS` name."""
    return "--model" if name == "model" else f"--{name.replace('_', '-')}"


def _short(value) -> str:
    return repr(value[:12] + "..") if isinstance(value, str) and len(value) > 16 else repr(value)


def _without_image_errors(answers: Path) -> list[dict[str, Any]]:
    """The answers file's records, minus those whose image could not be read: a rerun answers them again
    (the image may be there now), so they are dropped from the file first."""
    if not answers.is_file():
        return []
    records = read_answers(answers)
    kept = [r for r in records if "error" not in r]
    if len(kept) != len(records):
        rewrite_answers(answers, kept)
    return kept


def _check_images_exist(items: list, prompts: dict, root: Path) -> None:
    """Refuse a run in which no image can be found at all (a wrong --image-root), before any model loads."""
    from ..pipeline.images import PathEscapeError, resolve_inside

    paths = [path for item in items for path in prompts[item.question_id].images]
    if not paths:
        return
    for path in paths:
        try:
            if resolve_inside(root, path).is_file():
                return
        except PathEscapeError:
            continue
    raise SgeoError(
        f"none of the {len(paths)} images of the benchmark is under {root} (e.g. {paths[0]}); "
        "pass --image-root with the folder the benchmark's image paths are relative to"
    )


def chat_template(processor, system: str | None):
    """The model's own template (LLaVA-1.5's vicuna_v1 for LLaVA / SpatialGeo models, a composed model's
    LLM's chat template; vicuna_v1 without a processor), with `system` as its system message when given."""
    if processor is None:
        from ..model.conversation import get_template

        template = get_template("vicuna_v1")
        return template if system is None else dataclasses.replace(template, system=system)
    return processor.template(system)


def prompt_text(prompt, processor=None) -> str:
    """The exact text the tokenizer reads for a `Prompt` (what the answers file records)."""
    from ..model.conversation import render

    turn = [{"from": "human", "value": prompt.human}]
    return render(chat_template(processor, prompt.system), turn, add_generation_prompt=True)[0]


def answer_items(
    model,
    processor,
    items: list,
    prompts: dict,
    image_root: Path,
    answers: Path,
    decoding,
    batch_size: int = BATCH_SIZE,
    run: dict[str, Any] | None = None,
) -> None:
    """Answer `items` in batches, appending one record per item to `answers` as each batch finishes.

    `prompts` maps question ids to `Prompt`s; `run` ({"protocol", "seed"?}) is written into every record.
    An unreadable image is recorded with pred "" and an `error`, an item longer than the model's
    `model_max_length` with pred "" and `skipped`; neither reaches the model.
    """
    from tqdm.auto import tqdm

    from ..benchmarks import model_images
    from ..model.sampling import item_seed
    from ..pipeline.images import load_image, resolve_inside

    run = run or {}
    with tqdm(total=len(items), desc="eval", unit="q", file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(items), batch_size):
            batch, samples, pictures = [], [], []
            for item in items[start : start + batch_size]:
                prompt = prompts[item.question_id]
                text = prompt_text(prompt, processor)
                extra = {**run, "prompt": text}
                try:
                    loaded = [load_image(resolve_inside(image_root, path))[0] for path in prompt.images]
                except SgeoError as error:  # unreadable, missing or outside the root
                    append_answer(answers, answer_record(item, "", error=str(error), **extra))
                    continue
                conversation = [{"from": "human", "value": prompt.human}]
                try:
                    sample = processor.tokenize(
                        conversation, chat_template(processor, prompt.system), add_generation_prompt=True
                    )
                except ValueError as error:  # longer than model_max_length, through an image's tokens
                    append_answer(answers, answer_record(item, "", skipped=str(error), **extra))
                    continue
                batch.append((item, extra))
                samples.append(sample)
                pictures.append(model_images(prompt, loaded))
            if batch:
                seeds = [item_seed(int(run.get("seed", 0)), item.question_id) for item, _ in batch]
                preds = generate_batch(model, processor, samples, pictures, decoding, seeds)
                for (item, extra), pred in zip(batch, preds, strict=True):
                    append_answer(answers, answer_record(item, pred, **extra))
            bar.update(min(batch_size, len(items) - start))


def generate_batch(
    model, processor, samples: list[dict], pictures: list[list], decoding, seeds: list[int]
) -> list[str]:
    """One answer per tokenized sample (its images in `pictures`, in order), through the same batched
    generation `sgeo serve` runs (`model.generation`): greedy, or seeded sampling as `decoding` says."""
    from ..model.generation import generate_answers

    return generate_answers(
        model, processor, samples, pictures, decoding.max_new_tokens,
        temperature=decoding.temperature if decoding.sample else 0.0, top_k=decoding.top_k if decoding.sample else 0,
        seeds=seeds, max_batch=len(samples),
    )  # fmt: skip
