"""`run_quickstart`: the quickstart's steps in order, then its table, verdict lines and the ask example."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...errors import SgeoError
from ...pipeline.names import (
    SYNTHETIC_BENCH,
    SYNTHETIC_CAPTIONS,
    SYNTHETIC_EVAL,
    SYNTHETIC_QA,
    SYNTHETIC_TRAIN_BENCH,
)
from .recipe import BRANCH_RUNS, QUICKSTART, QuickstartRecipe, check_options, question_set
from .steps import (
    Steps,
    data_complete,
    evaluate,
    is_scored,
    is_trained,
    read_scores,
    store_complete,
    train_stage,
)


def run_quickstart(
    workdir: str | Path = "sgeo-quickstart",
    n: int | None = None,
    seed: int = 0,
    recipe: QuickstartRecipe = QUICKSTART,
) -> dict[str, Any]:
    """Run (or continue) the quickstart in `workdir`; returns the paths, timings and every score summary."""
    from ...benchmarks import load_benchmark
    from ...scoring import comparison_table, constant_baseline
    from ..extract import ExtractConfig, run_extract

    n = recipe.n if n is None else n
    check_options(n, seed, recipe)  # every option before any work: a bad one must not cost a minute of data
    work = Path(workdir).resolve()
    data = work / "data"
    paths = {
        "data": data,
        "store": work / "features.zarr",
        "stage1": work / "stage1",
        "stage2": work / "stage2",
    }
    # (label, visual branches, output) of each stage-2 run: SpatialGeo, then one branch at a time
    stage2 = [("trained", "both", paths["stage2"])]
    if recipe.branches:
        stage2 += [(label, branch, work / f"stage2-{branch}-only") for branch, label in BRANCH_RUNS]
    paths.update({f"stage2 {label}": out for label, _, out in stage2[1:]})
    runs = {"untrained": recipe.model, **{label: out for label, _, out in stage2}}
    bench = data / SYNTHETIC_EVAL / SYNTHETIC_BENCH
    steps = Steps(total=3 + len(stage2) + len(runs) + 1)
    if work.exists() and not work.is_dir():
        raise SgeoError(f"--workdir {work} is a file; pass a folder (new, or a quickstart's to continue it)")
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a parent that is a file, no permission, a read-only disk
        raise SgeoError(f"cannot create --workdir {work}: {error.strerror or error}") from None
    print(f"sgeo quickstart: {recipe.model} preset, {n} synthetic training images, {question_set(recipe)}, "
          f"seed {seed}, in {work}", flush=True)  # fmt: skip
    start = time.perf_counter()

    with steps("synthetic data", data, done=data_complete(data, n, recipe.n_eval, recipe.relations)) as todo:
        if todo:
            from ...synthetic import generate_synthetic

            summary = generate_synthetic(data, n, seed, n_eval=recipe.n_eval, overwrite=True,
                                         relations=recipe.relations)  # fmt: skip
            print(f"      {summary['images']} training images, {summary['qa_turns']} QA turns; "
                  f"held out: {summary['eval_images']} images, {summary['bench_items']} questions")  # fmt: skip

    with steps("extract features", paths["store"], done=store_complete(paths["store"])) as todo:
        if todo:
            run_extract(ExtractConfig(root=data, store=str(paths["store"]), dataset="synthetic",
                                      model=recipe.model, batch_size=16, shard_size=64))  # fmt: skip

    with steps("stage 1 (MoGe adapter, captions)", paths["stage1"], done=is_trained(paths["stage1"])) as todo:
        if todo:
            train_stage(recipe, 1, data / SYNTHETIC_CAPTIONS, recipe.model, paths, n, seed)
    for label, branch, out in stage2:
        what = "stage 2 (adapters + LLM, spatial QA)" + ("" if branch == "both" else f", {label} tokens")
        with steps(what, out, done=is_trained(out)) as todo:
            if todo:
                train_stage(recipe, 2, data / SYNTHETIC_QA, str(paths["stage1"]), paths, n, seed, out=out,
                       branches=None if branch == "both" else branch)  # fmt: skip

    scores = {}
    for label, model in runs.items():
        out = work / f"eval-{label.lower().replace(' ', '-')}"
        paths[f"eval {label}"] = out
        with steps(f"eval of the {label} model ({Path(str(model)).name})", out,
                   done=is_scored(out)) as todo:  # fmt: skip
            scores[label] = evaluate(recipe, bench, out, str(model)) if todo else read_scores(out)

    with steps("ask the trained model about a held-out image", None, done=False):
        example = ask_example(bench, paths["eval trained"])
        print(
            f"      sgeo ask {example['image']} {json.dumps(example['question'])} --model {paths['stage2']}"
        )
        print("      answer: ", end="", flush=True)
        from ...scoring import score_item
        from ..ask import AskConfig, run_ask

        asked = run_ask(AskConfig(image=example["image"], question=example["question"], model=str(paths["stage2"]),
                                  temperature=0.0, max_new_tokens=recipe.eval_max_new_tokens))  # fmt: skip
        right = bool(asked and score_item({**example["record"], "pred": asked["answer"]})["success"])
        print(f"      truth:  {example['gt']}  ({'right' if right else 'wrong'})")

    baseline = constant_baseline(load_benchmark("synthetic", data / SYNTHETIC_TRAIN_BENCH),
                                 load_benchmark("synthetic", bench))  # fmt: skip
    total = time.perf_counter() - start
    held_out = scores["trained"]["overall"]["n"]
    print(f"\n% right of {held_out} questions on {recipe.n_eval or 'the'} held-out images (never trained on), "
          f"{question_set(recipe)}:")  # fmt: skip
    print(comparison_table({**scores, "constant": baseline}, answers=baseline["answers"]))
    print()
    print("untrained: the same model before stage 1 and 2; constant: the best single answer per category, "
          "chosen on questions about the training images (yes/no or the first/second object named; the "
          "median value; the most common hour) and scored on the held-out ones")  # fmt: skip
    verdict = learning_verdict(scores["trained"], baseline)
    print(verdict)
    word_for_word = _word_for_word(paths["eval trained"])
    print(f"scored by the relation each answer states (sgeo's rule for an answer that does not open with yes "
          f"or no); {100 * word_for_word:.1f} % of the trained model's answers are the truth word for word, "
          "the closing verdict (\"so yes\", \"so the A is ...\") included")  # fmt: skip
    if recipe.branches:
        print("CLIP only / MoGe only: stage 2 trained again with one encoder's visual tokens (the other's are "
              "zeros); each one's score minus trained's shows what the missing branch adds")  # fmt: skip
        print(branch_verdict(scores))
    print(f"\nwhere everything is ({total / 60:.1f} min in all):")
    for name, path in paths.items():
        print(f"  {name:<17} {path}")
    print(f'  {"ask":<17} sgeo ask IMAGE "QUESTION" --model {paths["stage2"]}')
    result = {"paths": {k: str(v) for k, v in paths.items()}, "seconds": {**steps.timings, "total": total},
              "recipe": asdict(recipe), "n": n, "seed": seed, "scores": scores, "baseline": baseline,
              "verdict": verdict, "word_for_word": word_for_word}  # fmt: skip
    (work / "quickstart.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def learning_verdict(trained: dict, baseline: dict) -> str:
    """One line: how far the trained model is above (or below) the constant answer, overall and per type."""
    parts = []
    for name, t, b in [("overall", trained["overall"], baseline["overall"])] + [
        (kind, trained["by_type"][kind], baseline["by_type"][kind])
        for kind in sorted(set(trained.get("by_type", {})) & set(baseline.get("by_type", {})))
    ]:
        parts.append(f"{name} {100 * (t['score'] - b['score']):+.1f}")
    categories = set(trained.get("by_category", {})) & set(baseline.get("by_category", {}))
    above = sum(trained["by_category"][c]["score"] > baseline["by_category"][c]["score"] for c in categories)
    return (f"trained minus constant, points: {', '.join(parts)}; above it in {above} of {len(categories)} "
            "categories")  # fmt: skip


def branch_verdict(scores: dict) -> str:
    """One line on what each branch adds, with the noise level of the bench's size."""
    full, n = scores["trained"]["overall"]["score"], scores["trained"]["overall"]["n"]
    # two independent runs on n questions near 50%: the standard error of their difference, in points
    noise = 100 * (2 * 0.25 / max(n, 1)) ** 0.5
    # the score with one branch left minus the score with both, per branch run
    diffs = {
        label: 100 * (scores[label]["overall"]["score"] - full) for _, label in BRANCH_RUNS if label in scores
    }
    verdict = (
        "within noise: this run cannot tell what either branch adds"
        if max(map(abs, diffs.values()), default=0.0) < 2 * noise
        else "beyond noise: the one-branch run that scores lowest shows the branch that carries least alone"
    )
    listed = ", ".join(f"{label} {diff:+.1f}" for label, diff in diffs.items())
    return (f"one branch instead of both, points overall: {listed} (noise ~{noise:.1f} points "
            f"per difference on {n} questions; {verdict})")  # fmt: skip


def ask_example(bench: Path, trained_eval: Path) -> dict[str, Any]:
    """The first held-out question (in the bench's order) that the trained model's eval answered word for
    word as the truth, else the first it answered right by the scorer's rule (the relation stated), else
    the first question; with its image, its answer and the record that scores an answer to it."""
    from ...benchmarks import load_benchmark
    from ...scoring import score_item

    items = load_benchmark("synthetic", bench)
    answered = _answers(trained_eval)
    exact = {str(r["question_id"]) for r in answered if _same_words(r["pred"], r["gt"])}
    right = {str(r["question_id"]) for r in answered if score_item(r)["success"]}
    item = next((i for i in items if str(i.question_id) in exact), None)
    item = item or next((i for i in items if str(i.question_id) in right), items[0])
    return {"image": bench.parent / item.image, "question": item.extra.get("question", item.prompt),
            "gt": item.gt, "record": item.to_record("")}  # fmt: skip


def _word_for_word(eval_dir: Path) -> float:
    """The share of an eval's answers that are the truth word for word."""
    answered = _answers(eval_dir)
    return sum(_same_words(r["pred"], r["gt"]) for r in answered) / max(len(answered), 1)


def _answers(eval_dir: Path) -> list[dict]:
    from ...pipeline.answers import ANSWERS_FILE

    return [json.loads(line) for line in (eval_dir / ANSWERS_FILE).read_text().splitlines() if line]


def _same_words(pred: str, gt: str) -> bool:
    """Whether an answer is the truth word for word (case, spacing and punctuation aside)."""
    return re.findall(r"[a-z0-9]+", pred.lower()) == re.findall(r"[a-z0-9]+", gt.lower())
