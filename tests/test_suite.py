"""`sgeo eval --bench a,b,c` (or a named suite): every benchmark run as its own eval under OUT/<name>/, then one
table and one plot of all of them; whatever one of them would refuse is refused before any model loads."""

from __future__ import annotations

import json

import pytest

from benchmark_layouts import STANDINS
from conftest import assert_one_line_error, run_sgeo_batch
from sgeo.errors import SgeoError
from sgeo.jobs.suite import suite_benchmarks
from sgeo.pipeline.names import SUITES


def test_names_and_suites_expand_in_order_once():
    assert suite_benchmarks("cv-bench,pope") == ["cv-bench", "pope"]
    assert suite_benchmarks("general") == list(SUITES["general"])
    assert suite_benchmarks("pope,general,cv-bench") == ["pope", "mme", "mm-vet", "cv-bench"]
    with pytest.raises(SgeoError, match="unknown benchmark 'cvbench'; known: "):
        suite_benchmarks("cvbench,pope")
    with pytest.raises(SgeoError, match="has an empty name"):
        suite_benchmarks("pope,,mme")


def test_several_benchmarks_give_one_table_and_one_plot(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    for name in ("cv-bench", "pope", "mme"):
        STANDINS[name](data / name)
    args = ["eval", "--data", data, "--model", "tiny", "--limit", "2", "--max-new-tokens", "2"]
    ok, missing, judge_only = run_sgeo_batch(
        [
            [*args, "--bench", "cv-bench,pope,mme", "--out", out],
            [*args, "--bench", "cv-bench,blink", "--out", tmp_path / "o2"],
            [*args, "--bench", "general", "--out", tmp_path / "o3"],
        ]
    )
    assert ok["code"] == 0, ok["stderr"][-2000:]
    for name in ("cv-bench", "pope", "mme"):  # each benchmark a run of its own, its answers under their ids
        records = [json.loads(line) for line in (out / name / "answers.jsonl").read_text().splitlines()]
        assert len(records) == 2 and (out / name / "scores.json").is_file()
    table = (out / "suite.txt").read_text()
    assert table.splitlines()[0].split() == ["benchmark", "figure", "value"]
    rows = [line.split(None, 1) for line in table.splitlines()[1:]]
    # two ADE20K items (--limit 2): no COCO nor Omni3D in the run, so no formula figures for CV-Bench
    assert [r[1].split("  ")[0] for r in rows if r[0] == "cv-bench"] == ["items", "mean item score %"]
    assert any(r[0] == "pope" and r[1].startswith("F1 (mean over adversarial)") for r in rows)
    assert any(r[0] == "mme" and r[1].startswith("Perception score (sum of 10 subtasks)") for r in rows)
    assert table in ok["stdout"]
    suite = json.loads((out / "suite.json").read_text())
    assert list(suite) == ["cv-bench", "pope", "mme"] and suite["pope"]["overall"]["n"] == 2
    assert (out / "suite.png").stat().st_size > 0
    # refused before any model loads or any folder is written
    assert_one_line_error(missing, "lacks blink/", "each benchmark goes under its name")
    assert_one_line_error(judge_only, "MM-Vet is scored by a judge only")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
