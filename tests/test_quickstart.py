"""`sgeo quickstart` end to end at smoke size (the full-size run is a benchmark: SGEO_FULL_QUICKSTART=1)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_sgeo
from sgeo.jobs.quickstart import constant_baseline, side_by_side


def test_quickstart_smoke_through_the_cli_and_rerun_skips(tmp_path):
    work = tmp_path / "qs"
    args = ("quickstart", "--workdir", work, "--n", "8", "--n-eval", "2", "--max-steps", "1")
    first = run_sgeo(*args, check=True, timeout=600)
    for step in range(1, 8):
        assert f"[{step}/7]" in first.stdout
    lines = first.stdout.splitlines()
    assert any(line.split()[:4] == ["n", "untrained", "trained", "baseline"] for line in lines)  # both tables
    assert any(line.startswith("overall") for line in lines)
    for name in ("eval-untrained", "eval-trained"):
        scores = json.loads((work / name / "scores.json").read_text())
        assert scores["overall"]["n"] == 8  # 2 held-out images x 4 questions
    summary = json.loads((work / "quickstart.json").read_text())
    assert set(summary["trained"]["by_category"]) == set(summary["untrained"]["by_category"])

    again = run_sgeo(*args, check=True, timeout=600)  # everything but the final ask is already there
    assert again.stdout.count("(done already, skipped)") == 6


def test_constant_baseline_is_the_majority_answer(synthetic_root):
    bench = synthetic_root / "eval" / "bench.json"
    baseline = constant_baseline(bench)
    items = json.loads(bench.read_text())
    assert baseline["overall"]["n"] == len(items)
    for category, summary in baseline["by_category"].items():
        if category.endswith("_predicate"):
            assert baseline["answers"][category] in ("yes", "no")
            assert summary["score"] >= 0.5  # the majority of two classes
    table = side_by_side(baseline, baseline, baseline)
    assert table.splitlines()[0].split()[:4] == ["n", "untrained", "trained", "baseline"]


@pytest.mark.skipif(
    not os.environ.get("SGEO_FULL_QUICKSTART"), reason="benchmark: the ~10 minute full-size run"
)
def test_full_quickstart(tmp_path):
    result = run_sgeo("quickstart", "--workdir", tmp_path / "qs", check=True, timeout=3600)
    print(result.stdout)
