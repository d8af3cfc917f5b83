"""`sgeo quickstart`: the main job end to end on the demo preset, in about twelve minutes on 2 CPU cores.

    synthetic data -> extract (Ray) -> stage 1 -> stage 2 (DeepSpeed) -> eval of it, and of the untrained
    model, on held-out images -> ask (a held-out question it answered right)

The default asks what ten CPU minutes teach a random-init model: left/right, as yes/no predicates ("Is the
A to the left of the B?") and choices ("Which is more to the right, the A or the B?"). `--full` asks every
category (the longer run); `--branches` also trains stage 2 with CLIP tokens only and with MoGe tokens only
(what each encoder adds; it triples stage 2).

Every step calls the library function its command calls and skips when its output is already complete, so
rerunning the command after a kill continues where it stopped. It ends with every score side by side, the
best constant answer (fitted on questions about the training images, scored on the held-out ones), the
verdict line trained minus constant, and with --branches what each branch adds.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import SgeoError


@dataclass(frozen=True)
class QuickstartRecipe:
    """Sizes and training hyper-parameters of the quickstart (measured on 2 CPU cores).

    The reference recipe (1 epoch, global batch 256 / 128, LoRA) does not fit a random-init model: one epoch is
    a few optimizer steps, and a random-init LLM's frozen output head caps what LoRA can reach. So stage 2
    trains the whole LLM (`lora_r=0`) at a small global batch and a high learning rate, on many images (2000:
    with 200 the model memorised its images). The model is the `demo` preset: tiny's parts, but towers whose
    patch tokens say where they are (sin-cos position embeddings) and a 128-wide LLM at fan-in init, without
    which a tiny model cannot find an object's patches at all (bench/grounding_probe.py).

    What to ask, measured (README, "The quickstart"): trained alone on one relation for 1000-2000 steps, the
    model answers it on held-out images (bench/relation_answer_probe.py: 90-99 %); on the full mix of 28
    categories in this budget it sits near the best constant answer, not above it. So the default asks the
    predicates and choices of the relations its budget teaches (`relations`, with a "where" turn per
    object), and `FULL_QUICKSTART` (`--full`) the whole mix.
    """

    model: str = "demo"
    n: int = 2000  # training images
    # held-out images, 4 questions each (~36 per category): with 100 (~14 per category) one answer moved a
    # category by 7 points and the constant's quantitative score by 5 (55.6 on 90 questions, 47.4 on 4000)
    n_eval: int | None = 250
    stage1_epochs: float = 1.0  # stage 1 only aligns the MoGe adapter; it matters little here
    stage1_global_batch: int = 16
    stage1_lr: float = 1e-3
    # 12 epochs of 2000 images = 1500 steps of 16: left/right alone at 1000 steps learned in one run of the
    # relation probe; its loss falls a second time around step 400-800, which 1500 steps catch with room
    stage2_epochs: float = 12.0
    stage2_global_batch: int = 16
    stage2_lr: float = 2e-3  # the LLM's learning rate
    stage2_adapter_lr: float = 2e-3
    lora_r: int = 0  # 0: train the whole LLM instead of LoRA adapters
    lora_alpha: int = 0
    max_steps: int | None = None  # cap each stage at this many steps (smoke tests)
    eval_batch_size: int = 16
    eval_max_new_tokens: int = 32
    # The synthetic training QA carries no answer-format instructions, so the bench is asked without them.
    format_hint: bool = False
    gradient_checkpointing: bool = False  # a 2-layer LLM's activations are small; recomputing them costs time
    # also train and score stage 2 with CLIP tokens only and with MoGe tokens only (triples stage 2)
    branches: bool = False
    # ask only these relations' predicates and choices (generate_synthetic's `relations`); None: every category.
    # Measured (README): left/right alone is learned in this budget (90.7 % on held-out questions); left/right
    # with taller/shorter at 1000 steps is not (53.2 %, left/right at chance)
    relations: tuple[str, ...] | None = ("left",)


QUICKSTART = QuickstartRecipe()
# The whole question mix with the schedule it was measured with (README: 12.5 min, near the constant answer)
FULL_QUICKSTART = replace(QUICKSTART, relations=None, stage2_epochs=3.0, stage2_global_batch=8, stage2_lr=3e-3,
                          stage2_adapter_lr=1e-3)  # fmt: skip
BRANCH_RUNS = (("clip", "CLIP only"), ("moge", "MoGe only"))  # (visual_branches, label)


def run_quickstart(
    workdir: str | Path = "sgeo-quickstart",
    n: int | None = None,
    seed: int = 0,
    recipe: QuickstartRecipe = QUICKSTART,
) -> dict[str, Any]:
    """Run (or continue) the quickstart in `workdir`; returns the paths, timings and every score summary."""
    from ..pipeline.benchmarks import load_benchmark
    from ..pipeline.scoring import comparison_table, constant_baseline
    from .extract import ExtractConfig, run_extract

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
    bench = data / "eval" / "bench.json"
    steps = _Steps(total=3 + len(stage2) + len(runs) + 1)
    if work.exists() and not work.is_dir():
        raise SgeoError(f"--workdir {work} is a file; pass a folder (new, or a quickstart's to continue it)")
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a parent that is a file, no permission, a read-only disk
        raise SgeoError(f"cannot create --workdir {work}: {error.strerror or error}") from None
    print(f"sgeo quickstart: {recipe.model} preset, {n} synthetic training images, {question_set(recipe)}, "
          f"seed {seed}, in {work}", flush=True)  # fmt: skip
    start = time.perf_counter()

    with steps("synthetic data", data, done=_data_complete(data, n, recipe.n_eval, recipe.relations)) as todo:
        if todo:
            from ..pipeline.synthetic import generate_synthetic

            summary = generate_synthetic(data, n, seed, n_eval=recipe.n_eval, overwrite=True,
                                         relations=recipe.relations)  # fmt: skip
            print(f"      {summary['images']} training images, {summary['qa_turns']} QA turns; "
                  f"held out: {summary['eval_images']} images, {summary['bench_items']} questions")  # fmt: skip

    with steps("extract features", paths["store"], done=_store_complete(paths["store"])) as todo:
        if todo:
            run_extract(ExtractConfig(root=data, store=str(paths["store"]), dataset="synthetic",
                                      model=recipe.model, batch_size=16, shard_size=64))  # fmt: skip

    with steps("stage 1 (MoGe adapter, captions)", paths["stage1"], done=_trained(paths["stage1"])) as todo:
        if todo:
            _train(recipe, 1, data / "captions.json", recipe.model, paths, n, seed)
    for label, branch, out in stage2:
        what = "stage 2 (adapters + LLM, spatial QA)" + ("" if branch == "both" else f", {label} tokens")
        with steps(what, out, done=_trained(out)) as todo:
            if todo:
                _train(recipe, 2, data / "spatial_qa.json", str(paths["stage1"]), paths, n, seed, out=out,
                       branches=None if branch == "both" else branch)  # fmt: skip

    scores = {}
    for label, model in runs.items():
        out = work / f"eval-{label.lower().replace(' ', '-')}"
        paths[f"eval {label}"] = out
        with steps(f"eval of the {label} model ({Path(str(model)).name})", out,
                   done=(out / "scores.json").is_file()) as todo:  # fmt: skip
            scores[label] = _evaluate(recipe, bench, out, str(model)) if todo else _scores(out)

    with steps("ask the trained model about a held-out image", None, done=False):
        example = _ask_example(bench, paths["eval trained"])
        print(
            f"      sgeo ask {example['image']} {json.dumps(example['question'])} --model {paths['stage2']}"
        )
        print("      answer: ", end="", flush=True)
        from ..pipeline.scoring import score_item
        from .ask import AskConfig, run_ask

        asked = run_ask(AskConfig(image=example["image"], question=example["question"], model=str(paths["stage2"]),
                                  temperature=0.0, max_new_tokens=recipe.eval_max_new_tokens))  # fmt: skip
        right = bool(asked and score_item({**example["record"], "pred": asked["answer"]})["success"])
        print(f"      truth:  {example['gt']}  ({'right' if right else 'wrong'})")

    baseline = constant_baseline(load_benchmark("synthetic", data / "train_bench.json"),
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


def question_set(recipe: QuickstartRecipe) -> str:
    """What the run asks, in words: "questions on left/right, taller/shorter" or "every category (--full)"."""
    return _question_set(recipe.relations)


_RELATION_WORDS = {"left": "left/right", "above": "above/below", "behind": "behind/in front",
                   "tall": "taller/shorter", "wide": "wider/thinner", "big": "bigger/smaller"}  # fmt: skip


def _question_set(relations: tuple[str, ...] | None) -> str:
    if relations is None:
        return "every category (--full)"
    return "questions on " + ", ".join(_RELATION_WORDS.get(r, r) for r in relations)


def check_options(n: int, seed: int, recipe: QuickstartRecipe) -> None:
    """Refuse a bad option in one line before any step runs (each would otherwise fail only at its step)."""
    if n < 1:
        raise SgeoError(f"--n must be a positive number of images, got {n}")
    if seed < 0:  # the synthetic generator's rule
        raise SgeoError(f"--seed must be a non-negative integer, got {seed}")
    if recipe.n_eval is not None and recipe.n_eval < 1:  # an empty bench would fail after all the training
        raise SgeoError(f"--n-eval must be a positive number of held-out images, got {recipe.n_eval}")
    if recipe.max_steps is not None and recipe.max_steps < 1:
        raise SgeoError(f"--max-steps must be a positive number of steps, got {recipe.max_steps}")


def _train(recipe: QuickstartRecipe, stage: int, data: Path, model: str, paths: dict, n: int, seed: int,
           out: Path | None = None, branches: str | None = None) -> None:  # fmt: skip
    from .train import TrainConfig, run_train

    if stage == 1:
        epochs, global_batch, lr, adapter_lr = (
            recipe.stage1_epochs,
            recipe.stage1_global_batch,
            recipe.stage1_lr,
            None,
        )
    else:
        epochs, global_batch, lr = recipe.stage2_epochs, recipe.stage2_global_batch, recipe.stage2_lr
        adapter_lr = recipe.stage2_adapter_lr
    # a small n (smoke runs) gets a global batch it can fill: per-device batch x accumulation
    batch = min(global_batch, n, 8)
    accum = max(1, min(global_batch, n) // batch)
    lora = {} if stage == 1 else {"lora_r": recipe.lora_r, "lora_alpha": recipe.lora_alpha}
    run_train(TrainConfig(
        stage=stage, data=data, out=out or paths[f"stage{stage}"], store=str(paths["store"]), model=model,
        epochs=epochs, lr=lr, adapter_lr=adapter_lr, batch_size=batch, grad_accum=accum,
        max_steps=recipe.max_steps, num_workers=0, save_every=10_000, seed=seed, visual_branches=branches,
        gradient_checkpointing=recipe.gradient_checkpointing, **lora,
    ))  # fmt: skip


def _evaluate(recipe: QuickstartRecipe, bench: Path, out: Path, model: str) -> dict:
    from .eval import EvalConfig, run_eval

    config = EvalConfig(data=bench, out=out, bench="synthetic", model=model, format_hint=recipe.format_hint,
                        batch_size=recipe.eval_batch_size, max_new_tokens=recipe.eval_max_new_tokens)  # fmt: skip
    return run_eval(config, quiet=True)["scores"]


def _scores(out: Path) -> dict:
    return json.loads((out / "scores.json").read_text())


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


class _Steps:
    """Numbers the steps and prints one line per step (skipped or done, with its time); each use yields
    whether the step has to run."""

    def __init__(self, total: int):
        self.total, self.number, self.timings = total, 0, {}

    def __call__(self, what: str, output: Path | None, done: bool) -> _step:
        self.number += 1
        return _step(self.number, self.total, what, output, self.timings, done)


class _step:
    """Prints one line per step (skipped or done, with its time) and yields whether the step has to run."""

    def __init__(self, number: int, total: int, what: str, output: Path | None, timings: dict, done: bool):
        self.number, self.total, self.what, self.output = number, total, what, output
        self.timings, self.done = timings, done

    def __enter__(self) -> bool:
        self.start = time.perf_counter()
        where = f" -> {self.output}" if self.output is not None else ""
        state = " (done already, skipped)" if self.done else ""
        print(f"[{self.number}/{self.total}] {self.what}{where}{state}", flush=True)
        return not self.done

    def __exit__(self, kind, *_) -> None:
        if kind is None and not self.done:
            seconds = time.perf_counter() - self.start
            self.timings[self.what] = seconds
            print(f"      {self.what}: {seconds:.0f} s", flush=True)


def _data_complete(data: Path, n: int, n_eval: int | None, relations: tuple[str, ...] | None) -> bool:
    """Whether the synthetic data is there; data of another generator version or of other sizes is refused,
    not reused or overwritten, since the store and the models in the same workdir were made from it."""
    if not (data / "meta.json").is_file():
        return False
    from ..pipeline.json_files import read_json
    from ..pipeline.synthetic import GENERATOR_VERSION

    meta = read_json(data / "meta.json")
    if not isinstance(meta, dict):
        raise SgeoError(f"{data / 'meta.json'} is not the synthetic data's record; pass a new --workdir")
    if meta.get("version") != GENERATOR_VERSION:
        raise SgeoError(
            f"{data.parent} holds a quickstart of synthetic data v{meta.get('version')}, this sgeo writes "
            f"v{GENERATOR_VERSION}; pass a new --workdir (or delete that one)"
        )
    if meta.get("n") != n or (n_eval is not None and meta.get("n_eval") != n_eval):
        raise SgeoError(
            f"{data.parent} holds a quickstart of {meta.get('n')} training and {meta.get('n_eval')} held-out "
            f"images, this run asks for {n} and {n_eval}; pass a new --workdir, or the same --n and --n-eval"
        )
    held = meta.get("relations")
    if held != (None if relations is None else list(relations)):
        held_set = _question_set(None if held is None else tuple(held))
        raise SgeoError(f"{data.parent} holds a quickstart that asks {held_set}, this run asks "
                        f"{_question_set(relations)}; pass a new --workdir (or the same --full)")  # fmt: skip
    return True


def _store_complete(stores: Path) -> bool:
    """Whether the directory holds complete stores (one per tower, as `sgeo extract` writes them)."""
    from ..cache import store_info
    from ..pipeline.feature_set import stores_inside

    inside = stores_inside(str(stores)) or []
    try:
        infos = [store_info(p) for p in inside]
    except SgeoError:
        return False
    return bool(infos) and all(info["shards_committed"] == info["shards_total"] for info in infos)


def _trained(out: Path) -> bool:
    return (out / "config.json").is_file() and (out / "trainable.json").is_file()


def _ask_example(bench: Path, trained_eval: Path) -> dict[str, Any]:
    """The first held-out question (in the bench's order) that the trained model's eval answered word for
    word as the truth, else the first it answered right by the scorer's rule (the relation stated), else
    the first question; with its image, its answer and the record that scores an answer to it."""
    from ..pipeline.benchmarks import load_benchmark
    from ..pipeline.scoring import score_item

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
    from .eval import ANSWERS_FILE

    return [json.loads(line) for line in (eval_dir / ANSWERS_FILE).read_text().splitlines() if line]


def _same_words(pred: str, gt: str) -> bool:
    """Whether an answer is the truth word for word (case, spacing and punctuation aside)."""
    return re.findall(r"[a-z0-9]+", pred.lower()) == re.findall(r"[a-z0-9]+", gt.lower())
