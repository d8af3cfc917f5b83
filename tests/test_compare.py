"""`sgeo score --compare RUN_DIR ...`: several runs' figures side by side (table, compare.json, compare.png),
and `--published`: reference models' published figures beside them, each with its source."""

from __future__ import annotations

import json

from benchmark_layouts import write_cvbench, write_pope
from conftest import assert_one_line_error, run_sgeo_batch
from sgeo.benchmarks import load_benchmark
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import answer_record, append_answer


def _run(out, bench, data, answer, model_name):
    """A scored run folder as `sgeo eval` leaves it: answers.jsonl (each item answered by `answer(item)`),
    scores.json, score_info.json."""
    out.mkdir(parents=True)
    for item in load_benchmark(bench, data):
        append_answer(out / "answers.jsonl", answer_record(item, answer(item), model_name=model_name))
    score_answers(out / "answers.jsonl", bench)
    return out


def test_compare_sets_runs_side_by_side_and_refuses_other_benchmarks(tmp_path, synthetic_root):
    cv = write_cvbench(tmp_path / "cv-bench")
    right = _run(tmp_path / "right", "cv-bench", cv, lambda item: item.gt, "model-a")
    wrong = _run(tmp_path / "wrong", "cv-bench", cv, lambda item: "", "model-b")
    other = _run(tmp_path / "synth", "synthetic", synthetic_root, lambda item: item.gt, "model-a")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "cmp"
    results = run_sgeo_batch([
        ["score", "--compare", right, wrong, "--out", out],
        ["score", "--compare", right, other, "--out", tmp_path / "x"],
        ["score", "--compare", right, tmp_path / "empty"],
        ["score", right / "answers.jsonl", wrong / "answers.jsonl"],
        ["score", right / "answers.jsonl", "--published"],
    ])  # fmt: skip
    assert results[0]["code"] == 0, results[0]["stderr"][-2000:]
    document = json.loads((out / "compare.json").read_text())
    rows = {(r["bench"], r["figure"]): r["values"] for r in document["rows"]}
    assert rows[("cv-bench", "CV-Bench accuracy")] == {"right": 100.0, "wrong": 0.0}
    assert rows[("cv-bench", "mean item score")] == {"right": 100.0, "wrong": 0.0}
    assert rows[("cv-bench", "items")]["right"] == len(load_benchmark("cv-bench", cv))
    assert document["runs"]["right"]["models"] == ["model-a"]
    assert (out / "compare.png").stat().st_size > 0 and (out / "compare.txt").is_file()
    table = results[0]["stdout"]
    assert "CV-Bench accuracy" in table and "right" in table and "wrong" in table and "model-b" in table
    assert_one_line_error(results[1], "different benchmarks", "cv-bench", "synthetic")
    assert not (tmp_path / "x").exists()  # refused before anything is written
    assert_one_line_error(results[2], "holds no scores.json")
    assert_one_line_error(results[3], "one answers file", "--compare")
    assert_one_line_error(results[4], "--published applies to --compare")


def test_published_figures_stand_beside_a_run_with_their_source(tmp_path, synthetic_root):
    from sgeo.benchmarks.published_figures import PUBLISHED, published_for

    assert PUBLISHED and all(f.source and f.model and f.unit in ("%", "points") for f in PUBLISHED)
    pope = write_pope(tmp_path / "pope")
    run = _run(tmp_path / "mine", "pope", pope, lambda item: item.gt, "model-a")
    synth = _run(tmp_path / "synth", "synthetic", synthetic_root, lambda item: item.gt, "model-a")
    results = run_sgeo_batch([
        ["score", "--compare", run, "--published", "--out", tmp_path / "cmp"],
        ["score", "--compare", synth, "--published", "--out", tmp_path / "cmp2"],
    ])  # fmt: skip
    assert results[0]["code"] == 0, results[0]["stderr"][-2000:]
    document = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    expected = published_for(["pope"])
    assert expected, "the table has POPE figures"
    rows = {(r["bench"], r["figure"]): r["values"] for r in document["rows"]}
    for figure in expected:
        assert rows[(figure.bench, figure.figure)][figure.column] == figure.value
        assert figure.source in results[0]["stdout"]  # the source is named beside the numbers
    # the published F1 stands on the row of the run's own F1 (the same figure, so the same name)
    assert rows[("pope", "F1 (mean over adversarial, popular, random)")]["mine"] == 100.0
    assert_one_line_error(results[1], "no published figures", "synthetic")
