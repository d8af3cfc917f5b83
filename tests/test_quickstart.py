"""`sgeo quickstart` end to end: a smoke run through the CLI, its baseline, and a small run that must learn.

The full-size run is a benchmark (SGEO_FULL_QUICKSTART=1 runs it here and prints its table).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

import pytest

from conftest import assert_one_line_error, run_sgeo, run_sgeo_batch
from sgeo.benchmarks import load_benchmark
from sgeo.scoring import comparison_table, constant_baseline

# the default question set (the recipe's relations): predicates and choices of left/right
ASKED = {"left_predicate", "right_predicate", "left_choice", "right_choice"}


def test_quickstart_smoke_through_the_cli_and_rerun_skips(tmp_path):
    work = tmp_path / "qs"
    args = ("quickstart", "--workdir", work, "--n", "8", "--n-eval", "2", "--max-steps", "1")
    first = run_sgeo(*args, check=True, timeout=900)
    # data, extract, stage 1, stage 2, 2 evals (untrained, trained), ask: no branch runs unless asked
    steps = 7
    for step in range(1, steps + 1):
        assert f"[{step}/{steps}]" in first.stdout
    assert f"[{steps + 1}/" not in first.stdout and not (work / "stage2-clip-only").exists()
    lines = first.stdout.splitlines()
    assert any(line.split() == ["n", "untrained", "trained", "constant", "answer"] for line in lines)
    assert any(line.startswith("trained minus constant, points: overall") for line in lines)
    assert not any(line.startswith("one branch instead of both") for line in lines)
    assert any(line.strip().startswith("truth: ") for line in lines)  # the closing ask shows the answer
    summary = json.loads((work / "quickstart.json").read_text())
    for label in ("untrained", "trained"):
        scores = summary["scores"][label]
        assert scores["overall"]["n"] == 8  # 2 held-out images x 4 questions
        assert set(scores["by_category"]) <= ASKED  # only the relations the budget teaches are asked
    assert json.loads((work / "data" / "meta.json").read_text())["relations"] == ["left"]

    again = run_sgeo(*args, check=True, timeout=900)  # everything but the final ask is already there
    assert again.stdout.count("(done already, skipped)") == steps - 1


def test_quickstart_full_with_branches_asks_every_category_and_trains_each_branch(tmp_path):
    """--full: today's whole question mix; --branches: stage 2 again with one encoder's tokens at a time,
    each scored, with a line saying what the comparison shows."""
    work = tmp_path / "qs"
    args = ("quickstart", "--workdir", work, "--n", "8", "--n-eval", "2", "--max-steps", "1", "--full",
            "--branches")  # fmt: skip
    first = run_sgeo(*args, check=True, timeout=900)
    # data, extract, stage 1, three stage-2 runs (both branches, CLIP only, MoGe only), 4 evals, ask
    assert "[11/11]" in first.stdout
    lines = first.stdout.splitlines()
    header = ["n", "untrained", "trained", "CLIP", "only", "MoGe", "only", "constant", "answer"]
    assert any(line.split() == header for line in lines)
    assert any(line.startswith("CLIP only / MoGe only: stage 2 trained again") for line in lines)
    assert any(line.startswith("one branch instead of both") for line in lines)
    for name in ("eval-untrained", "eval-trained", "eval-clip-only", "eval-moge-only"):
        scores = json.loads((work / name / "scores.json").read_text())
        assert scores["overall"]["n"] == 8  # 2 held-out images x 4 questions
    for branch in ("clip", "moge"):  # the ablation is part of the saved model: eval and ask see it too
        config = json.loads((work / f"stage2-{branch}-only" / "config.json").read_text())
        assert config["visual_branches"] == branch
    assert json.loads((work / "stage2" / "config.json").read_text())["visual_branches"] == "both"
    meta = json.loads((work / "data" / "meta.json").read_text())
    assert "relations" not in meta  # the whole mix: quantities and directions among the questions
    categories = {
        i["qa_info"]["category"] for i in json.loads((work / "data" / "eval" / "bench.json").read_text())
    }
    assert categories - ASKED


def test_the_closing_ask_picks_a_held_out_question_the_model_got_right(tmp_path):
    """The example the quickstart ends on is one the trained model's eval answered word for word as the
    truth (else one right by the scorer's rule), not the first question: a newcomer's last line shows what
    it learned, and no answer whose closing verdict contradicts the truth."""
    from sgeo.jobs.quickstart.job import ask_example
    from sgeo.scoring import score_item
    from sgeo.synthetic import generate_synthetic

    data = tmp_path / "data"
    generate_synthetic(data, 2, seed=0, n_eval=3, relations=("left", "tall"))
    bench = data / "eval" / "bench.json"
    items = load_benchmark("synthetic", bench)
    flipped = {", so yes.": ", so no.", ", so no.": ", so yes."}

    def verdict_flipped(item) -> str:  # the relation stated right, the verdict after it wrong
        said = next(v for v in flipped if item.gt.endswith(v))
        return item.gt.removesuffix(said) + flipped[said]

    predicates = [k for k, i in enumerate(items) if i.gt.endswith((", so yes.", ", so no."))]
    k_flip, k_exact = predicates[0], predicates[1]
    assert score_item(items[k_flip].to_record(verdict_flipped(items[k_flip])))["success"]
    for name, exact in (("with-exact", True), ("without", False)):
        (tmp_path / name).mkdir()
        with (tmp_path / name / "answers.jsonl").open("w") as out:
            for k, item in enumerate(items):
                if k == k_flip:
                    pred = verdict_flipped(item)
                else:
                    pred = item.gt if exact and k == k_exact else _wrong_answer(item)
                out.write(json.dumps(item.to_record(pred)) + "\n")
        example = ask_example(bench, tmp_path / name)
        picked = items[k_exact if exact else k_flip]
        assert (
            example["question"] == picked.extra.get("question", picked.prompt) and example["gt"] == picked.gt
        )
        assert example["image"] == bench.parent / picked.image and example["image"].is_file()


def _wrong_answer(item) -> str:
    """An answer the scorer counts wrong: the gt with its stated relation swapped."""
    from sgeo.scoring import score_item
    from sgeo.synthetic.questions import STATEMENTS

    swap = {a: b for pair in STATEMENTS.values() for a, b in (pair, pair[::-1])}
    said = next(w for w in swap if w in item.gt)
    pred = item.gt.replace(said, swap[said])
    assert not score_item(item.to_record(pred))["success"]
    return pred


def test_a_workdir_of_other_data_is_refused_not_reused(tmp_path):
    """A workdir's store and models were made from its data: another generator version or other sizes are
    refused in one line before anything is written, instead of being trained and scored as if asked for."""
    from sgeo.synthetic import GENERATOR_VERSION

    work = tmp_path / "qs"
    (work / "data").mkdir(parents=True)
    args = ["quickstart", "--workdir", work, "--n", "8", "--n-eval", "2"]
    metas = [{"version": GENERATOR_VERSION, "n": 10, "n_eval": 2}, {"version": GENERATOR_VERSION, "n": 8, "n_eval": 5},
             {"version": GENERATOR_VERSION - 1, "n": 8, "n_eval": 2},
             {"version": GENERATOR_VERSION, "n": 8, "n_eval": 2},  # the whole mix, for a default run
             {"version": GENERATOR_VERSION, "n": 8, "n_eval": 2, "relations": ["tall"]}]  # fmt: skip
    results = []
    for meta in metas:
        (work / "data" / "meta.json").write_text(json.dumps(meta))
        results += run_sgeo_batch([args])
    assert_one_line_error(results[0], "10 training and 2 held-out images", "asks for 8 and 2")
    assert_one_line_error(results[1], "8 training and 5 held-out images")
    assert_one_line_error(results[2], f"v{GENERATOR_VERSION - 1}", "new --workdir")
    assert_one_line_error(
        results[3], "asks every category", "this run asks questions on left/right", "new --workdir"
    )
    assert_one_line_error(results[4], "asks questions on taller/shorter", "new --workdir")
    assert sorted(p.name for p in work.iterdir()) == ["data"]


def test_constant_baseline_is_chosen_on_the_training_split(synthetic_root):
    train = load_benchmark("synthetic", synthetic_root / "train_bench.json")
    held_out = load_benchmark("synthetic", synthetic_root / "eval" / "bench.json")
    baseline = constant_baseline(train, held_out)
    assert baseline["overall"]["n"] == len(held_out)
    for category in baseline["by_category"]:
        if category.endswith("_predicate"):
            assert baseline["answers"][category] in ("yes", "no", "first object", "second object")

    # Fitted on training answers that all say "No", every predicate's constant is "no", whatever the
    # held-out answers are: the held-out ground truth never picks its own baseline.
    said_no = [
        dataclasses.replace(item, gt="No.") if item.qa_info["category"].endswith("_predicate") else item
        for item in train
    ]
    fitted = constant_baseline(said_no, held_out)
    predicates = [c for c in fitted["answers"] if c.endswith("_predicate")]
    assert predicates and all(fitted["answers"][c] == "no" for c in predicates)

    table = comparison_table({"a": baseline, "b": fitted}, answers=fitted["answers"])
    assert table.splitlines()[0].split() == ["n", "a", "b", "answer"]


def test_training_beats_the_constant_answer_on_held_out_images(tmp_path):
    """What the tiny model does learn in minutes: the floor's colour, which its captions name, on images
    it never saw. A change that stops it learning from the image (store rows, adapters, labels, loss,
    optimiser) drops it to the best constant answer, the training split's most common floor."""
    from sgeo.jobs.eval import EvalConfig, run_eval
    from sgeo.jobs.extract import ExtractConfig, run_extract
    from sgeo.jobs.train import TrainConfig, run_train
    from sgeo.synthetic import generate_synthetic

    data, store, model = tmp_path / "data", str(tmp_path / "features.zarr"), tmp_path / "stage2"
    generate_synthetic(data, 300, seed=0, n_eval=40)
    run_extract(ExtractConfig(root=data, store=store, dataset="synthetic", model="tiny", batch_size=16,
                              shard_size=64))  # fmt: skip
    run_train(TrainConfig(stage=2, data=data / "captions.json", out=model, store=store, epochs=8.0, lr=3e-3,
                          adapter_lr=1e-3, lora_r=0, batch_size=8, grad_accum=1, num_workers=0,
                          gradient_checkpointing=False))  # fmt: skip
    meta = json.loads((data / "meta.json").read_text())
    prompt = "Describe the image briefly."
    bench = [
        {"id": str(i), "file_path": m["image"], "text_q": prompt,
         "qa_info": {"category": "floor", "type": "qualitative"},
         "conversations": [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": m["floor"]}]}
        for i, m in enumerate(meta["eval"])
    ]  # fmt: skip
    (data / "eval" / "floors.json").write_text(json.dumps(bench))
    run_eval(EvalConfig(data=data / "eval" / "floors.json", out=tmp_path / "eval", bench="synthetic",
                        model=str(model), format_hint=False, batch_size=16, max_new_tokens=24), quiet=True)  # fmt: skip
    answers = [json.loads(line) for line in (tmp_path / "eval" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 40
    trained = sum(f" {a['gt']} floor" in a["pred"] for a in answers) / len(answers)
    constant_floor = Counter(m["floor"] for m in meta["train"]).most_common(1)[0][0]
    constant = sum(a["gt"] == constant_floor for a in answers) / len(answers)
    print(f"floor colour on held-out images: trained {trained:.0%}, constant {constant:.0%}")
    assert trained > constant


@pytest.mark.skipif(
    not os.environ.get("SGEO_FULL_QUICKSTART"), reason="benchmark: the ~10 minute full-size run"
)
def test_full_quickstart(tmp_path):
    result = run_sgeo("quickstart", "--workdir", tmp_path / "qs", check=True, timeout=3600)
    print(result.stdout)
