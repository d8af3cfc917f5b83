"""`sgeo eval`: answers.jsonl, scores.json, resuming a killed run, bad images, SpatialScore's multi-image items."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from PIL import Image

from benchmark_fixtures import SPATIALSCORE_ROWS, write_spatialscore
from conftest import run_sgeo
from sgeo.benchmarks import load_benchmark
from sgeo.jobs.eval import EvalConfig, run_eval


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_killed_eval_resumes_without_redoing_answers(synthetic_root, tmp_path):
    bench = synthetic_root / "eval" / "bench.json"
    ids = [item.question_id for item in load_benchmark("synthetic", bench)]
    out = tmp_path / "eval"
    args = [
        "eval",
        "--bench",
        "synthetic",
        "--data",
        bench,
        "--out",
        out,
        "--model",
        "tiny",
        "--max-new-tokens",
        "6",
    ]
    answers = out / "answers.jsonl"
    process = subprocess.Popen(  # one item per batch, so it can be killed between answers
        [sys.executable, "-m", "sgeo.cli", *map(str, args), "--batch-size", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if answers.is_file() and answers.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the eval finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    before = _lines(answers) if answers.read_text().endswith("\n") else _lines(answers)[:-1]
    assert 3 <= len(before) < len(ids)

    result = run_sgeo(*args, "--batch-size", "16", check=True)
    assert f"{len(before)} already answered" in result.stdout
    after = _lines(answers)
    assert after[: len(before)] == before  # nothing answered before the kill was redone
    assert sorted(r["question_id"] for r in after) == sorted(ids)  # every item once, no duplicates
    for record in after:
        assert {"question_id", "pred", "gt", "qa_info", "question", "image"} <= set(record)
        assert {"category", "type"} <= set(record["qa_info"])

    scores = json.loads((out / "scores.json").read_text())
    assert {"by_type", "by_category", "overall"} <= set(scores)
    assert scores["overall"]["n"] == len(ids)
    for part in ("by_type", "by_category"):
        for summary in scores[part].values():
            assert summary["n"] >= 1 and 0.0 <= summary["score"] <= 1.0
    assert set(scores["by_type"]) <= {"quantitative", "qualitative"}
    assert (out / "scores.png").stat().st_size > 0
    assert "overall" in result.stdout  # the table is printed


def test_bad_image_is_recorded_and_the_rest_answered(tiny, tmp_path):
    Image.new("RGB", (64, 48), (200, 40, 40)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows = [
        {"id": f"q{k}", "file_path": name, "qa_info": {"category": "left_predicate", "type": "qualitative"},
         "conversations": [{"from": "human", "value": "<image>\nIs the red box to the left of the blue box?"},
                           {"from": "gpt", "value": "Yes, the red box is to the left of the blue box."}]}
        for k, name in enumerate(["good.png", "broken.png", "../outside.png", "good.png"])
    ]  # fmt: skip
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    config = EvalConfig(
        data=tmp_path / "bench.json", out=tmp_path / "out", bench="spatialrgpt", max_new_tokens=4
    )
    result = run_eval(config, loaded=tiny, quiet=True)
    records = {r["question_id"]: r for r in _lines(tmp_path / "out" / "answers.jsonl")}
    assert sorted(records) == ["q0", "q1", "q2", "q3"]
    assert records["q1"]["pred"] == "" and "broken.png" in records["q1"]["error"]
    assert records["q2"]["pred"] == "" and "outside" in records["q2"]["error"]
    assert "error" not in records["q0"] and "error" not in records["q3"]
    assert result["scores"]["overall"]["n"] == 4


def _spatialscore_with_a_long_row(root):
    # 17 frames x 128 image tokens (tiny) do not fit model_max_length 2048: recorded as skipped
    long_row = {
        **SPATIALSCORE_ROWS[5],
        "index": 9999,
        "img_paths": [f"./dataset/long/f{k}.jpg" for k in range(17)],
    }
    return write_spatialscore(root, [*SPATIALSCORE_ROWS, long_row])


def test_eval_spatialscore_end_to_end_with_multi_image_rows(tiny, tmp_path):
    data = _spatialscore_with_a_long_row(tmp_path)
    out = tmp_path / "out"
    args = ["eval", "--bench", "spatialscore", "--data", data, "--out", out, "--model", "tiny"]
    result = run_sgeo(*args, "--max-new-tokens", "4", "--batch-size", "4", check=True)
    records = {r["question_id"]: r for r in _lines(out / "answers.jsonl")}
    assert sorted(records) == sorted([str(r["index"]) for r in SPATIALSCORE_ROWS] + ["9999"])
    assert "model_max_length" in records["9999"]["skipped"] and records["9999"]["pred"] == ""
    for row in SPATIALSCORE_ROWS:
        record = records[str(row["index"])]
        assert "skipped" not in record and "error" not in record
        assert record["prompt"].count("<image>") == len(row["img_paths"])  # one <image> per image
        assert record["protocol"] == "reference" and record["gt"] == row["answer"]
        if len(row["img_paths"]) > 1:
            assert record["images"] == row["img_paths"]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["overall"]["n"] == 15 and scores["overall"]["skipped"] == 1
    assert scores["by_source"]["VSI-Bench_8"]["n"] == 3 and scores["by_source"]["VGBench"]["n"] == 3
    assert scores["by_category"]["Counting"]["n"] == 4
    assert scores["by_subcategory"]["Depth and Distance / Absolute"]["n"] == 2
    assert set(scores["by_type"]) == {"multi-choice", "open-ended", "judgment"}
    for line in ("by category:", "by subcategory:", "by source:", "  VSI-Bench_8", "1 skipped"):
        assert line in result.stdout
    with Image.open(out / "scores.png") as plot:  # three panels: category, subcategory, source
        assert plot.height >= 3 * 4 * 100

    # a single-image view of the same items: the long row fits once its frames are tiled into one canvas
    config = EvalConfig(
        data=data, out=tmp_path / "tiled", bench="spatialscore", max_new_tokens=2, multi_image="tile"
    )
    tiled = run_eval(config, loaded=tiny, quiet=True)
    assert tiled["scores"]["overall"]["n"] == 15 and "skipped" not in tiled["scores"]["overall"]
    assert all(r["prompt"].count("<image>") == 1 for r in _lines(tmp_path / "tiled" / "answers.jsonl"))
