"""Hostile inputs, round 2: the options and files of `ask`, `eval`, `score`, `data` and `quickstart`.

NaN and huge sampling options, `<image>` typed into a question, JSON nested past the parser's recursion limit,
benchmark files that are not UTF-8, a file given as the quickstart's folder, a resumed eval asked another way.
Each is refused in one line with exit 2 before any work (or, for `<image>`, handled), and the CLI's exit after
a refusal is clean every time. Most cases run as command lines through `sgeo.cli.main` in one process
(`run_sgeo_batch`), so the imports are paid once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import assert_one_line_error, run_sgeo_batch
from sgeo.errors import SgeoError
from sgeo.pipeline.answers import read_answers

NESTED = "[" * 200_000 + "]" * 200_000  # what json's C scanner meets with RecursionError


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_store):
    root = tmp_path_factory.mktemp("hostile_inputs")
    Image.new("RGB", (64, 48), (30, 30, 200)).save(root / "ok.png")
    (root / "nested.json").write_text(NESTED)
    # a JSONL benchmark whose second line is the nested one
    bench = json.loads((tiny_store["root"] / "eval" / "bench.json").read_text())
    (root / "nested-line.jsonl").write_text(json.dumps(bench[0]) + "\n" + NESTED + "\n")
    latin1 = [{**bench[0], "note": "caf\xe9"}, bench[1]]  # saved by an editor set to Latin-1
    (root / "latin1.json").write_bytes(json.dumps(latin1, ensure_ascii=False).encode("latin-1"))
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "annotations" / "captions_train2017.json").write_text(NESTED)
    (root / "mix").mkdir()
    (root / "mix" / "llava_v1_5_mix665k.json").write_text(NESTED)
    (root / "a-file").write_text("not a folder")
    return {**tiny_store, "dir": root, "bench": tiny_store["root"] / "eval" / "bench.json"}


def test_bad_options_and_files_are_one_line_before_any_work(files):
    d, ok = files["dir"], files["dir"] / "ok.png"
    (d / "synthetic-out").mkdir()
    (d / "synthetic-out" / "notes.txt").write_text("mine")
    quickstart = ["quickstart", "--n", "2", "--n-eval", "1"]
    cases = [
        # 8: NaN compared as "not above 0" and answered greedily; serve's range is 0..2
        (["ask", ok, "hi?", "--json", "--temperature", "nan"], "--temperature must be from 0 (greedy) to 2"),
        (["ask", ok, "hi?", "--json", "--temperature", "inf"], "got inf"),
        (["ask", ok, "hi?", "--json", "--temperature", "2.5"], "got 2.5"),
        # 17: nothing is left to ask once the image token is taken out
        (["ask", ok, "<image> <image>", "--json"], "QUESTION is empty once <image> is taken out"),
        # 14: RecursionError in every reader of a user's JSON
        (["train", "--stage", "1", "--data", d / "nested.json", "--store", files["store"], "--out", d / "t"],
         f"{d / 'nested.json'} is not valid JSON: nested too deeply"),
        (["eval", "--bench", "synthetic", "--data", d / "nested.json", "--out", d / "e1"],
         f"{d / 'nested.json'} is not valid JSON: nested too deeply"),
        (["eval", "--bench", "spatialrgpt", "--data", d / "nested-line.jsonl", "--out", d / "e2"],
         f"{d / 'nested-line.jsonl'} line 2 is not valid JSON: nested too deeply"),
        (["score", d / "nested.json", "--bench", "synthetic"], "line 1 is not valid JSON: nested too deeply"),
        (["data", "coco", "--root", d / "coco", "--out", d / "coco.json"], "is not valid JSON: nested too deeply"),
        # 15: a benchmark file that is not UTF-8
        (["eval", "--bench", "spatialrgpt", "--data", d / "latin1.json", "--out", d / "e3"],
         f"{d / 'latin1.json'} is not UTF-8 text (byte "),
        # 18 and the quickstart's options: refused before the first step writes anything
        (["quickstart", "--workdir", d / "a-file", "--n", "2"], "is a file"),
        (["quickstart", "--workdir", d / "a-file" / "below", "--n", "2"], "cannot create --workdir"),
        ([*quickstart, "--workdir", d / "qs1", "--max-steps", "-1"], "--max-steps must be a positive"),
        ([*quickstart[:3], "--n-eval", "0", "--workdir", d / "qs2"], "--n-eval must be a positive"),
        ([*quickstart, "--workdir", d / "qs3", "--seed", "-1"], "--seed must be a non-negative"),
        # `sgeo data synthetic` names an option the command has
        (["data", "synthetic", "--out", d / "synthetic-out", "--n", "2", "--n-eval", "1", "--image-size", "32"],
         "--overwrite"),
    ]  # fmt: skip
    results = run_sgeo_batch([command for command, _ in cases])
    for (_, fragment), result in zip(cases, results, strict=True):
        assert_one_line_error(result, fragment)
        assert result["code"] == 2
    for name in ("qs1", "qs2", "qs3", "t", "e1", "e2", "e3"):
        assert not (d / name).exists(), f"{name} was written before the refusal"
    assert (d / "a-file").read_text() == "not a folder"

    (again,) = run_sgeo_batch([[*cases[-1][0], "--overwrite"]])
    assert again["code"] == 0, again["stderr"][-2000:]
    assert (d / "synthetic-out" / "captions.json").is_file()
    assert (d / "synthetic-out" / "notes.txt").read_text() == "mine"  # only the generator's own files go


def test_a_mix665k_file_nested_too_deeply_is_one_line(files):
    from sgeo.pipeline.datasets import get_dataset, write_training_json

    with pytest.raises(SgeoError, match="llava_v1_5_mix665k.json is not valid JSON: nested too deeply"):
        get_dataset("llava-mix665k", files["dir"] / "mix").images()
    with pytest.raises(SgeoError, match="nested too deeply"):
        write_training_json("llava-mix665k", files["dir"] / "mix", files["dir"] / "mix.json")


def test_answer_length_is_bounded_by_the_context_and_image_tokens_are_dropped(files):
    ok = files["dir"] / "ok.png"
    huge = "100000000"
    results = run_sgeo_batch([
        ["ask", ok, "hi?", "--json", "--max-new-tokens", huge],
        ["eval", "--bench", "synthetic", "--data", files["bench"], "--out", files["dir"] / "e-long", "--limit", "1",
         "--max-new-tokens", huge],
        # 17: serve's rule: the question's own <image> tokens are dropped, the chat places its one image
        ["ask", ok, "<image><image> where is <image> the box?", "--json", "--max-new-tokens", "2"],
    ])  # fmt: skip
    for result in results[:2]:
        assert_one_line_error(
            result, f"--max-new-tokens {huge} is more than", "2048 tokens (model_max_length)"
        )
    assert not (files["dir"] / "e-long" / "answers.jsonl").exists()
    assert results[2]["code"] == 0, results[2]["stderr"][-2000:]
    assert json.loads(results[2]["stdout"].strip().splitlines()[-1])["tokens"] <= 2


def test_a_resumed_eval_asked_another_way_is_refused(files):
    out = files["dir"] / "resumed"
    common = ["eval", "--bench", "synthetic", "--data", files["bench"], "--out", out, "--limit", "2"]
    answers = out / "answers.jsonl"
    first, *results = run_sgeo_batch([
        [*common, "--max-new-tokens", "2"],  # answers 2 items; then the same --out, resumed:
        [*common, "--max-new-tokens", "2", "--no-format-hint"],
        [*common, "--max-new-tokens", "3"],
        [*common],  # the protocol's 64
        [*common, "--max-new-tokens", "2", "--precision", "bf16"],
        [*common, "--max-new-tokens", "2"],  # the same options: resumed, nothing asked again
    ])  # fmt: skip
    assert first["code"] == 0, first["stderr"][-2000:]
    recorded = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(recorded) == 2
    assert {(r["max_new_tokens"], r["format_hint"], r["precision"]) for r in recorded} == {(2, True, "fp32")}
    assert_one_line_error(
        results[0], "made with format_hint=True, this run has format_hint=False", "--format-hint"
    )
    assert_one_line_error(results[1], "made with max_new_tokens=2, this run has max_new_tokens=3")
    assert_one_line_error(results[2], "this run has max_new_tokens=64", "--max-new-tokens as before")
    assert_one_line_error(results[3], "made with precision='fp32', this run has precision='bf16'")
    assert results[4]["code"] == 0 and "2 already answered" in results[4]["stdout"], results[4]["stdout"]
    assert [r["pred"] for r in recorded] == [r["pred"] for r in read_answers(answers)]  # none redone or mixed

    # answers of an older sgeo, which recorded none of these options, are not taken as this run's
    legacy = [{k: v for k, v in r.items() if k not in ("max_new_tokens", "format_hint", "precision")}
              for r in recorded]  # fmt: skip
    answers.write_text("".join(json.dumps(r) + "\n" for r in legacy))
    (old,) = run_sgeo_batch([[*common, "--max-new-tokens", "2"]])
    assert_one_line_error(old, "max_new_tokens unrecorded (an older sgeo)")


# The `sgeo` program with a daemon thread in torch's C++ code when a refusal ends it, as the trainer's batch
# prefetcher or a generation thread can be: main() is called by the __main__ module, as the console script does.
DAEMON_THREAD_IN_TORCH = """
import threading, torch
a = torch.randn(600, 600)
def work():
    while True:
        torch.mm(a, a)
threading.Thread(target=work, daemon=True).start()
from sgeo.cli import main
main()
"""


def test_a_refusal_exits_cleanly_with_native_threads_running(files, tmp_path):
    """20a: after a refusal, the process aborted in 2 of 35 runs, after the right error line: "terminate called
    without an active exception", rc 134. CPython stops daemon threads at exit with pthread_exit, which aborts
    in C++ code; with a thread in a torch op at that moment it happened every time (the old exit, 5 of 5)."""
    script = tmp_path / "sgeo_with_a_thread.py"
    script.write_text(DAEMON_THREAD_IN_TORCH)
    ok = files["dir"] / "ok.png"
    eval_long = ["eval", "--bench", "synthetic", "--data", files["bench"], "--out", tmp_path / "e", "--limit", "1",
                 "--max-new-tokens", "99999"]  # fmt: skip
    for args in (["ask", ok, "hi?", "--temperature", "nan"], ["ask", ok, "<image>"], eval_long):
        result = subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True,
                                timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
        assert "terminate called" not in result.stderr and result.returncode == 2, result.stderr[-2000:]
        assert_one_line_error({"args": list(map(str, args)), "code": 2, "stdout": result.stdout,
                               "stderr": result.stderr})  # fmt: skip
    assert "eval: 1 items of" in result.stdout  # what was printed before the refusal is not lost
