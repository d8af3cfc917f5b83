"""Hostile inputs to `sgeo train`, round 2: what a single run listens on, a run folder that belongs to someone
else or to a run still going, --skip-invalid with repeated or missing ids, a disk that fills while the final
model is written, and options that are nonsense (non-finite epochs, a LoRA rank no layer can use). Each is
refused in one line or handled; everything runs for real (the CLI in subprocesses, real DeepSpeed, real
files, real resource limits)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from conftest import assert_one_line_error, run_sgeo, run_sgeo_batch

FAST = ["--batch-size", "2", "--grad-accum", "1", "--num-workers", "0", "--seed", "1"]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _stage1(store: dict, out: Path, *extra) -> list:
    return ["train", "--stage", "1", "--model", "tiny", "--data", store["stage1"], "--store", store["store"],
            "--out", out, *FAST, *extra]  # fmt: skip


def _popen(command: list) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sgeo.cli", *map(str, command)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)  # fmt: skip


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_single_process_run_listens_on_loopback_only(tiny_store, tmp_path):
    """Nobody launched it, so nothing needs to reach it: every socket of its process tree (the trainer and
    its loader worker) listens on loopback. torch's TCPStore, which env:// starts, listened on every address."""
    out = tmp_path / "run"
    process = _popen(_stage1(tiny_store, out, "--max-steps", "3", "--num-workers", "1"))
    listening, watched_after_a_step = set(), False
    while process.poll() is None:
        stepped = (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0
        try:
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            for member in tree:
                for connection in member.net_connections(kind="inet"):
                    if connection.status == psutil.CONN_LISTEN:
                        listening.add((connection.laddr.ip, connection.laddr.port))
        except psutil.Error:  # a member exited while we looked
            continue
        # a step has run, so the process group (and every socket it opens) existed during this look
        watched_after_a_step |= stepped
        time.sleep(0.05)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert watched_after_a_step, "the run ended before its sockets could be looked at"
    assert {ip for ip, _ in listening} <= LOOPBACK, listening


def test_a_second_run_into_the_same_out_is_refused_and_a_dead_runs_lock_is_taken_over(tiny_store, tmp_path):
    out = tmp_path / "shared"
    command = _stage1(tiny_store, out, "--max-steps", "3", "--save-every", "1")
    first = _popen(command)
    lock = out / "train.lock"
    try:
        while first.poll() is None:  # until the first run holds the folder (its record written)
            try:
                if json.loads(lock.read_text()).get("pid") == first.pid:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        assert first.poll() is None, "the first run never locked its --out: " + first.communicate()[1][-2000:]
        os.kill(first.pid, signal.SIGSTOP)  # it holds the lock for as long as the second run needs to look
        second = run_sgeo_batch([command])[0]
        assert_one_line_error(second, f"--out {out}", f"pid {first.pid}", "another --out")
    finally:
        first.kill()  # killed, not finished: its lock file stays behind, held by no one
        first.communicate()
    assert lock.is_file()
    # the killed run's lock does not block: the same command takes the folder over and completes the run
    again = run_sgeo_batch([command])[0]
    assert again["code"] == 0, again["stderr"][-2000:]
    assert _steps(out) == [1, 2, 3]
    assert not lock.exists()  # released when the run ended


def test_skip_invalid_drops_only_the_invalid_samples(tiny_store, tmp_path):
    """An invalid sample that shares its id with a valid one (or, without an id, the position of one) must
    not take the valid one with it: samples are told apart by position."""
    qa = json.loads(Path(tiny_store["stage2"]).read_text())[:8]
    broken = {"conversations": [{"from": "bot", "value": "<image>\nHi"}, {"from": "gpt", "value": "Yo"}]}
    valid_without_id = {k: v for k, v in qa[1].items() if k != "id"}
    samples = [
        {**qa[0], **broken, "image": qa[0]["image"]},  # invalid, no id: named "0" (its JSON position)
        valid_without_id,  # valid, no id: the first kept sample, at position 0 of the kept ones
        {**qa[2], "id": "twin"},  # valid
        {**qa[3], **broken, "id": "twin"},  # invalid, with the valid one's id
        *qa[4:8],
    ]
    for sample in samples[:2]:
        sample.pop("id", None)
    data = tmp_path / "qa.json"
    data.write_text(json.dumps(samples))
    out = tmp_path / "o"
    result = run_sgeo_batch([["train", "--stage", "2", "--data", data, "--store", tiny_store["store"], "--out", out,
                              "--max-steps", "1", "--lora-r", "4", "--skip-invalid", *FAST]])[0]  # fmt: skip
    assert result["code"] == 0, result["stderr"][-2000:]
    assert "skipped 2 invalid" in result["stderr"], result["stderr"][-2000:]
    assert json.loads((out / "train_config.json").read_text())["num_samples"] == len(samples) - 2


def test_a_full_disk_while_writing_the_final_model_is_one_line_and_a_rerun_saves_it(tiny_store, tmp_path):
    """The final save (safetensors) on a full disk: one line, the trained weights kept in the last checkpoint,
    and the same command, once there is space, writes the model without training again. The disk fills on a
    rerun of a finished run, whose only large write is that save (a stage-1 checkpoint holds a file as large
    as the tiny model, so a size limit cannot fail the model alone during training: the code path is the
    same, `save_outputs` after the last step)."""
    import resource

    out = tmp_path / "full"
    command = _stage1(tiny_store, out, "--max-steps", "1")
    trained = run_sgeo_batch([command])[0]
    assert trained["code"] == 0, trained["stderr"][-2000:]
    limit = 1 << 20
    assert (out / "model.safetensors").stat().st_size > limit

    def limited():  # writes past 1 MB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_sgeo(*command, preexec_fn=limited)
    as_dict = {"args": ["train"], "code": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
    assert_one_line_error(as_dict, f"cannot write the trained model to {out}", "File too large", "free space")
    assert (out / "checkpoints" / "latest").read_text() == "step-0000001"  # the trained weights are safe
    again = run_sgeo_batch([command])[0]  # space freed: the same command writes the model, training no step
    assert again["code"] == 0, again["stderr"][-2000:]
    assert "already trained 1 of 1 steps" in again["stderr"]
    from sgeo.model import load_model

    load_model(str(out))  # a complete model directory again


def test_nonsense_options_and_a_foreign_out_folder_are_refused_before_anything_heavy(tiny_store, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"mine": true}\n')
    (foreign / "notes.txt").write_text("keep me\n")
    stage2 = ["train", "--stage", "2", "--model", "tiny", "--data", tiny_store["stage2"], "--store",
              tiny_store["store"], *FAST, "--max-steps", "1"]  # fmt: skip
    epochs = "--epochs must be a positive finite number"
    cases = [
        (
            _stage1(tiny_store, foreign, "--max-steps", "1"),
            ["--out", "config.json", "not an sgeo training run"],
        ),
        (_stage1(tiny_store, tmp_path / "a", "--epochs", "nan"), [epochs]),
        (_stage1(tiny_store, tmp_path / "b", "--epochs", "inf"), [epochs]),
        (_stage1(tiny_store, tmp_path / "c", "--epochs", "-1"), [epochs]),
        # the tiny preset's LLM is 64 wide: a rank above 64 is meaningless, and 1e8 would need 25 GB
        ([*stage2, "--out", tmp_path / "d", "--lora-r", "100000000"], ["--lora-r 100000000", "64"]),
        ([*stage2, "--out", tmp_path / "e", "--lora-r", "65"], ["--lora-r 65", "--lora-r 64 or less"]),
    ]
    *results, fits = run_sgeo_batch([*(command for command, _ in cases), [*stage2, "--out", tmp_path / "f",
                                                                            "--lora-r", "64"]])  # fmt: skip
    assert fits["code"] == 0, fits["stderr"][-2000:]  # a rank the layers can hold trains
    for (_, fragments), result in zip(cases, results, strict=True):
        assert_one_line_error(result, *fragments)
        assert "step/s" not in result["stderr"]  # refused before the first step
    assert (foreign / "config.json").read_text() == '{"mine": true}\n'  # nothing of the user's was touched
    assert sorted(p.name for p in foreign.iterdir()) == ["config.json", "notes.txt"]
    assert not any((tmp_path / name).exists() for name in "abcde")  # no folder was made for a refused run
