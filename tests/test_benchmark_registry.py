"""The benchmark registry: one record per benchmark, from which the CLI's names, the loaders, the scorers and
every per-benchmark decision come; each registered benchmark run through `sgeo eval` on its stand-in."""

from __future__ import annotations

import json

import pytest

from benchmark_layouts import STANDINS, scripted_judge
from conftest import assert_one_line_error, run_sgeo_batch
from sgeo import cli
from sgeo.benchmarks import LOADERS, PROTOCOLS, REGISTRY, SCORERS, Benchmark, load_benchmark
from sgeo.benchmarks.protocols import GREEDY_SGEO, Decoding
from sgeo.benchmarks.registry import build_registry
from sgeo.pipeline import names


def test_every_registered_benchmark_has_a_loader_protocols_and_a_scorer():
    assert list(REGISTRY) == list(names.BENCHMARK_MODULES)
    for name, record in REGISTRY.items():
        assert record.name == name and record.title
        assert callable(record.loader) and callable(record.prompt) and callable(record.scorer)
        assert record.protocols and set(record.protocols) <= set(PROTOCOLS)
        assert all(isinstance(d, Decoding) for d in record.decoding.values())
        assert record.default_protocol in record.protocols
        assert record.version and record.files and record.scoring  # what the README table shows
    assert {n: r.loader for n, r in REGISTRY.items()} == LOADERS
    assert {n: r.scorer for n, r in REGISTRY.items()} == SCORERS


def test_the_cli_names_are_the_registry():
    assert ", ".join(REGISTRY) == cli.BENCH_HELP
    assert tuple(REGISTRY) == names.BENCHMARKS
    assert set(STANDINS) == set(REGISTRY), (
        "every registered benchmark needs a stand-in in benchmark_layouts.py"
    )


def test_a_benchmark_without_a_scorer_fails_at_registration():
    with pytest.raises(TypeError, match="scorer"):
        Benchmark(name="x", title="X", loader=len, prompt=len, decoding={"sgeo": GREEDY_SGEO})  # no scorer
    with pytest.raises(TypeError, match="scorer must be callable"):
        Benchmark(name="x", title="X", loader=len, prompt=len, decoding={"sgeo": GREEDY_SGEO}, scorer=None)
    with pytest.raises(TypeError, match="protocols"):
        Benchmark(name="x", title="X", loader=len, prompt=len, decoding={"greedy": GREEDY_SGEO}, scorer=len)
    # a registered module without a record stops the import that builds the registry, naming it
    with pytest.raises(TypeError, match="defines no BENCHMARK record for benchmark 'x'"):
        build_registry({"x": "common"})
    with pytest.raises(TypeError, match="named 'cv-bench', registered as 'x'"):
        build_registry({"x": "cvbench"})


def test_unknown_names_and_judges_are_one_line_before_any_work(tmp_path):
    cvbench = STANDINS["cv-bench"](tmp_path / "cv")
    out = tmp_path / "out"
    results = run_sgeo_batch(
        [
            ["eval", "--bench", "nope", "--data", cvbench, "--out", out],
            ["score", tmp_path / "answers.jsonl", "--bench", "nope"],
            [
                "eval",
                "--bench",
                "cv-bench",
                "--data",
                cvbench,
                "--out",
                out,
                "--judge",
                "http://127.0.0.1:9/v1",
            ],
            ["eval", "--bench", "cv-bench", "--data", cvbench, "--out", out, "--protocol", "mine"],
        ]
    )
    known = "known: " + ", ".join(sorted(REGISTRY))
    assert_one_line_error(results[0], "unknown benchmark 'nope'", known)
    assert_one_line_error(results[1], "unknown benchmark 'nope'", known)
    assert_one_line_error(results[2], "--judge does not apply to cv-bench", "benchmarks with a judge: ")
    assert_one_line_error(results[3], "unknown protocol 'mine' for cv-bench; known: reference, sgeo")
    assert not out.exists()  # refused before anything was written


def test_every_registered_benchmark_through_sgeo_eval(tmp_path):
    """`sgeo eval --bench NAME --data STANDIN --model tiny --limit 3` for every benchmark, in one process:
    answers recorded under the items' own ids, scored by the benchmark's rules and breakdown (by a local
    judge where only a judge scores)."""
    commands, expected = [], {}
    with scripted_judge(lambda body: "1.0") as judge:
        for name in REGISTRY:
            data = STANDINS[name](tmp_path / "data" / name)
            expected[name] = [item.question_id for item in load_benchmark(name, data)][:3]
            commands.append(
                ["eval", "--bench", name, "--data", data, "--out", tmp_path / name, "--model", "tiny"]
                + ["--limit", "3", "--max-new-tokens", "2", "--batch-size", "3"]
                + (["--judge", judge.url] if REGISTRY[name].judge_required else [])
            )
        results = run_sgeo_batch(commands)
    for name, result in zip(REGISTRY, results, strict=True):
        assert result["code"] == 0, f"{name}: {result['stderr'][-2000:]}"
        records = [json.loads(line) for line in (tmp_path / name / "answers.jsonl").read_text().splitlines()]
        assert [r["question_id"] for r in records] == expected[name]
        assert all("error" not in r and "skipped" not in r for r in records), name
        scores = json.loads((tmp_path / name / "scores.json").read_text())
        assert scores["overall"]["n"] == 3
        if REGISTRY[name].summary is not None:  # the benchmark's own figures, printed with the table
            assert scores["benchmark"]["name"] == name and scores["benchmark"]["headline"]
            assert f"{REGISTRY[name].title} (as its authors report it):" in result["stdout"]
        assert (tmp_path / name / "scores.png").stat().st_size > 0
    assert len(judge.requests) == sum(3 for name in REGISTRY if REGISTRY[name].judge_required)
