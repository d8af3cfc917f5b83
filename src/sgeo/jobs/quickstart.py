"""`sgeo quickstart`: the main job end to end on the tiny preset, in about ten minutes on 2 CPU cores.

    synthetic data -> extract (Ray) -> stage 1 -> stage 2 (DeepSpeed) -> eval untrained and trained -> ask

Every step calls the library function its command calls and skips when its output is already complete, so
rerunning the command after a kill continues where it stopped. It ends with the two score tables side by
side and a best-constant-answer baseline computed from the held-out ground truths.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import SgeoError


@dataclass(frozen=True)
class QuickstartRecipe:
    """Sizes and training hyper-parameters of the quickstart (measured on 2 CPU cores; see the module doc).

    The reference recipe (1 epoch, global batch 256 / 128, LoRA) does not fit the tiny preset: one epoch is
    one or two optimizer steps on a few hundred images, and the tiny LLM is a random-init 2-layer, 64-wide
    Llama whose frozen output head caps what LoRA can reach (its loss stays near 5.8). So stage 2 trains
    the whole LLM (`lora_r=0`) for many epochs at a small global batch and a high learning rate. More
    epochs (40) or more images (600) made the held-out scores no better: the model memorises its images.
    """

    n_eval: int | None = 100  # held-out images, 4 questions each (~14 per category)
    stage1_epochs: float = 1.0  # stage 1 only aligns the MoGe adapter; it matters little here
    stage1_global_batch: int = 16
    stage1_lr: float = 1e-3
    stage2_epochs: float = 24.0
    stage2_global_batch: int = 8
    stage2_lr: float = 3e-3  # the LLM's learning rate
    stage2_adapter_lr: float = 1e-3
    lora_r: int = 0  # 0: train the whole LLM instead of LoRA adapters
    lora_alpha: int = 0
    max_steps: int | None = None  # cap each stage at this many steps (smoke tests)
    eval_batch_size: int = 16
    eval_max_new_tokens: int = 32
    # The synthetic training QA carries no answer-format instructions, so the bench is asked without them.
    format_hint: bool = False


QUICKSTART = QuickstartRecipe()
STEPS = 7


def run_quickstart(
    workdir: str | Path = "sgeo-quickstart",
    n: int = 200,
    seed: int = 0,
    recipe: QuickstartRecipe = QUICKSTART,
) -> dict[str, Any]:
    """Run (or continue) the quickstart in `workdir`; returns the paths, timings and both score summaries."""
    from .eval import EvalConfig, run_eval
    from .extract import ExtractConfig, run_extract
    from .train import TrainConfig, run_train

    if n < 1:
        raise SgeoError(f"--n must be a positive number of images, got {n}")
    work = Path(workdir).resolve()
    paths = {
        "data": work / "data", "store": work / "features.zarr", "stage1": work / "stage1", "stage2": work / "stage2",
        "eval_untrained": work / "eval-untrained", "eval_trained": work / "eval-trained",
    }  # fmt: skip
    bench = paths["data"] / "eval" / "bench.json"
    work.mkdir(parents=True, exist_ok=True)
    print(f"sgeo quickstart: tiny preset, {n} synthetic training images, seed {seed}, in {work}", flush=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    with _step(
        1, "synthetic data", paths["data"], timings, done=(paths["data"] / "meta.json").is_file()
    ) as todo:
        if todo:
            from ..pipeline.synthetic import generate_synthetic

            summary = generate_synthetic(paths["data"], n, seed, n_eval=recipe.n_eval, overwrite=True)
            print(f"      {summary['images']} training images, {summary['qa_turns']} QA turns; "
                  f"held out: {summary['eval_images']} images, {summary['bench_items']} questions")  # fmt: skip

    with _step(2, "extract features", paths["store"], timings, done=_store_complete(paths["store"])) as todo:
        if todo:
            run_extract(ExtractConfig(root=paths["data"], store=str(paths["store"]), dataset="synthetic",
                                      model="tiny", batch_size=16, shard_size=64))  # fmt: skip

    stages = {
        1: {"data": paths["data"] / "captions.json", "model": "tiny", "epochs": recipe.stage1_epochs,
            "global_batch": recipe.stage1_global_batch, "lr": recipe.stage1_lr},
        2: {"data": paths["data"] / "spatial_qa.json", "model": str(paths["stage1"]), "epochs": recipe.stage2_epochs,
            "global_batch": recipe.stage2_global_batch, "lr": recipe.stage2_lr, "adapter_lr": recipe.stage2_adapter_lr,
            "lora_r": recipe.lora_r, "lora_alpha": recipe.lora_alpha},
    }  # fmt: skip
    for stage, options in stages.items():
        out = paths[f"stage{stage}"]
        what = "stage 1 (MoGe adapter, captions)" if stage == 1 else "stage 2 (adapters + LLM, spatial QA)"
        with _step(2 + stage, what, out, timings, done=_trained(out)) as todo:
            if todo:
                # a small n (smoke runs) gets a global batch it can fill: per-device batch x accumulation
                batch = min(options["global_batch"], n, 8)
                accum = max(1, min(options["global_batch"], n) // batch)
                run_train(TrainConfig(stage=stage, out=out, store=str(paths["store"]), batch_size=batch,
                                      grad_accum=accum, max_steps=recipe.max_steps,
                                      num_workers=0, save_every=10_000, seed=seed,
                                      **{k: v for k, v in options.items() if k != "global_batch"}))  # fmt: skip

    scores = {}
    for label, model in (("untrained", "tiny"), ("trained", str(paths["stage2"]))):
        out = paths[f"eval_{label}"]
        with _step(4 + len(scores) + 1, f"eval of the {label} model ({model})", out, timings,
                   done=(out / "scores.json").is_file()) as todo:  # fmt: skip
            config = EvalConfig(data=bench, out=out, bench="synthetic", model=model, format_hint=recipe.format_hint,
                                batch_size=recipe.eval_batch_size, max_new_tokens=recipe.eval_max_new_tokens)  # fmt: skip
            scores[label] = (
                run_eval(config, quiet=True)["scores"]
                if todo
                else json.loads((out / "scores.json").read_text())
            )

    with _step(7, "ask the trained model", None, timings, done=False):
        example = _ask_example(bench)
        print(
            f"      sgeo ask {example['image']} {json.dumps(example['question'])} --model {paths['stage2']}"
        )
        print("      answer: ", end="", flush=True)
        from .ask import AskConfig, run_ask

        run_ask(AskConfig(image=example["image"], question=example["question"], model=str(paths["stage2"]),
                          temperature=0.0, max_new_tokens=recipe.eval_max_new_tokens))  # fmt: skip
        print(f"      ground truth: {example['gt']}")

    baseline = constant_baseline(bench)
    total = time.perf_counter() - start
    print()
    print(side_by_side(scores["untrained"], scores["trained"], baseline))
    print()
    print(
        "baseline: the best constant answer per category, chosen on the held-out answers themselves (majority "
        "yes/no or first/second object for qualitative, median value or most common hour for quantitative)"
    )
    print(f"\nwhere everything is ({total / 60:.1f} min in all):")
    for name, path in paths.items():
        print(f"  {name:<15} {path}")
    print(f'  {"ask":<15} sgeo ask IMAGE "QUESTION" --model {paths["stage2"]}')
    result = {"paths": {k: str(v) for k, v in paths.items()}, "seconds": {**timings, "total": total},
              "recipe": asdict(recipe), "n": n, "seed": seed, "untrained": scores["untrained"],
              "trained": scores["trained"], "baseline": baseline}  # fmt: skip
    (work / "quickstart.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


class _step:
    """Prints one line per step (skipped or done, with its time) and yields whether the step has to run."""

    def __init__(self, number: int, what: str, output: Path | None, timings: dict, done: bool):
        self.number, self.what, self.output, self.timings, self.done = number, what, output, timings, done

    def __enter__(self) -> bool:
        self.start = time.perf_counter()
        where = f" -> {self.output}" if self.output is not None else ""
        state = " (done already, skipped)" if self.done else ""
        print(f"[{self.number}/{STEPS}] {self.what}{where}{state}", flush=True)
        return not self.done

    def __exit__(self, kind, *_) -> None:
        if kind is None and not self.done:
            seconds = time.perf_counter() - self.start
            self.timings[self.what] = seconds
            print(f"      {self.what}: {seconds:.0f} s", flush=True)


def _store_complete(store: Path) -> bool:
    if not (store / "zarr.json").is_file():
        return False
    from ..cache import store_info

    try:
        info = store_info(str(store))
    except SgeoError:
        return False
    return info["shards_committed"] == info["shards_total"]


def _trained(out: Path) -> bool:
    return (out / "config.json").is_file() and (out / "trainable.json").is_file()


def _ask_example(bench: Path) -> dict[str, Any]:
    """The first held-out predicate question (a yes/no answer is easy to read), with its image and answer."""
    from ..pipeline.benchmarks import load_benchmark

    items = load_benchmark("synthetic", bench)
    item = next((i for i in items if i.qa_info.get("category", "").endswith("_predicate")), items[0])
    return {
        "image": bench.parent / item.image,
        "question": item.extra.get("question", item.prompt),
        "gt": item.gt,
    }


# -- the baseline and the side-by-side table -------------------------------------------------------
def constant_baseline(bench: Path) -> dict[str, Any]:
    """Per category, the score of the best single answer given to every question of that category, chosen on
    the held-out ground truths themselves (so an upper bound for any constant answer):

    qualitative: "Yes." / "No." for predicates, the first or the second object named for choices (the
    majority answer); quantitative: the category's median value; direction: its most common hour.
    Returns scores in the `aggregate` shape (by_category, by_type, overall) plus each category's answer.
    """
    from ..pipeline.benchmarks import load_benchmark
    from ..pipeline.scoring import (
        aggregate,
        candidates_in,
        parse_clock,
        parse_quantity,
        relation_of,
        score_item,
    )

    by_category: dict[str, list] = defaultdict(list)
    for item in load_benchmark("synthetic", bench):
        by_category[item.qa_info["category"]].append(item)
    records, answers = [], {}
    for category, items in by_category.items():
        policies = _policies(category, items, candidates_in, relation_of, parse_clock, parse_quantity)
        best_name, best = None, None
        for name, answer_of in policies.items():
            scored = []
            for item in items:
                record = item.to_record(answer_of(item))
                scored.append({**record, **score_item(record)})
            if best is None or sum(r["success"] for r in scored) > sum(r["success"] for r in best):
                best_name, best = name, scored
        answers[category] = best_name
        records.extend(best or [])
    return {**aggregate(records), "answers": answers}


def _policies(category, items, candidates_in, relation_of, parse_clock, parse_quantity) -> dict[str, Any]:
    info = items[0].qa_info
    if category == "direction":
        hours = Counter(h for i in items if (h := parse_clock(i.gt)) is not None)
        return {f"{h} o'clock": (lambda _, h=h: f"{h} o'clock") for h, _ in hours.most_common(1)} or {
            "": lambda _: ""
        }
    if info.get("type") == "quantitative":
        values = [v for i in items if (v := parse_quantity(i.gt)) is not None]
        if not values:
            return {"": lambda _: ""}
        median = statistics.median(values)
        return {f"{median:.2f} meters": lambda _: f"About {median:.2f} meters."}
    rel = relation_of(category)

    def nth(k: int):
        def answer(item) -> str:
            names = candidates_in(item.extra.get("question", item.prompt), rel)
            return f"The {names[k]}." if len(names) > k else ""

        return answer

    return {"yes": lambda _: "Yes.", "no": lambda _: "No.", "first object": nth(0), "second object": nth(1)}


def side_by_side(untrained: dict, trained: dict, baseline: dict) -> str:
    """One row per type and category: n, untrained, trained, baseline (scores in %)."""
    rows = [("", "n", "untrained", "trained", "baseline", "baseline answer")]

    def row(name: str, key: str | None, part: str | None) -> tuple[str, ...]:
        def get(scores: dict) -> dict:
            return scores["overall"] if part is None else scores.get(part, {}).get(key, {})

        cells = [get(s) for s in (untrained, trained, baseline)]
        n = next((c["n"] for c in cells if "n" in c), 0)
        pct = [f"{100 * c['score']:.1f}" if "score" in c else "" for c in cells]
        answer = baseline.get("answers", {}).get(key, "") if part == "by_category" else ""
        return (name, str(n), *pct, answer)

    rows.append(row("overall", None, None))
    types = sorted(set(untrained.get("by_type", {})) | set(trained.get("by_type", {})))
    rows.extend(row(f"  {t}", t, "by_type") for t in types)
    rows.append(("[category]", "", "", "", "", ""))
    categories = sorted(set(untrained.get("by_category", {})) | set(trained.get("by_category", {})))
    rows.extend(row(f"  {c}", c, "by_category") for c in categories)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:5], widths[1:5], strict=True)), r[5]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
