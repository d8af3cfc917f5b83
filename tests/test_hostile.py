"""Hostile and broken inputs, as a careless user or an adversary would hand them over: crafted and damaged
checkpoints, a 143-byte PNG that pads to gigabytes, pipes and devices as images, wrong eval roots, broken
training samples, nonsense options. Each is refused in one line with a non-zero exit, or handled, and nothing
runs code from a file. (The feature store's own damage cases are in test_store.py.)"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from conftest import assert_one_line_error, open_extracted, run_sgeo, run_sgeo_batch

TRAIN = ["--batch-size", "2", "--grad-accum", "1", "--num-workers", "0", "--seed", "1"]


class _RunsCode:
    """A pickle that, when unpickled without weights_only, creates `marker` (what an attacker would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"module": _RunsCode(marker)}))


def _copy_model(source: Path, target: Path, **config) -> Path:
    """A copy of a model directory elsewhere: its tower paths made absolute, `config` fields changed."""
    from sgeo.model import resolve_model

    resolved = resolve_model(str(source))
    shutil.copytree(source, target)
    saved = json.loads((target / "config.json").read_text())
    for tower in saved["vision_towers"]:
        tower["source"] = resolved.towers[tower["name"]].path
    saved.update(**config)
    (target / "config.json").write_text(json.dumps(saved))
    return target


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_store, tiny_dir):
    """Files every case below reads: images of every bad kind, a trained checkpoint, broken sample files."""
    root = tmp_path_factory.mktemp("hostile")
    Image.new("RGB", (20000, 1), (200, 30, 30)).save(root / "strip.png")  # 143 bytes of PNG
    Image.new("RGB", (16000, 800), (30, 200, 30)).save(root / "wide.png")  # aspect 20: allowed, padded
    Image.new("RGB", (64, 48), (30, 30, 200)).save(root / "ok.png")
    os.mkfifo(root / "pipe.jpg")
    (root / "latin1.jsonl").write_bytes("caf\xe9 \xff\n".encode("latin-1"))
    qa = json.loads(Path(tiny_store["stage2"]).read_text())
    good = qa[0]
    bad = {
        "role": {**good, "conversations": [{"from": "bot", "value": "<image>\nHi"}, {"from": "gpt", "value": "Yo"}]},
        "swapped": {**good, "conversations": [{"from": "human", "value": "<image>\nHi"},
                                              {"from": "human", "value": "again"}]},
        "int_value": {**good, "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": 42}]},
        "string_turns": {**good, "conversations": ["<image>\nHi", "Yo"]},
        # LLaVA moves an image to the front of its turn: past the cut only after long earlier turns
        "late_image": {**good, "conversations": [{"from": "human", "value": "word " * 400},
                                                 {"from": "gpt", "value": "Yes."},
                                                 {"from": "human", "value": "<image>\nAnd here?"},
                                                 {"from": "gpt", "value": "No."}]},
    }  # fmt: skip
    files = {}
    for name, sample in bad.items():
        files[name] = root / f"{name}.json"
        files[name].write_text(json.dumps(qa[:3] + [{**sample, "id": f"bad-{name}"}]))
    # a model directory whose weights file is a crafted pickle, and one whose tokenizer wants remote code
    pickled = _copy_model(tiny_dir, root / "pickled-model")
    (pickled / "model.safetensors").unlink()
    _crafted(pickled / "pytorch_model.bin", root / "MARKER-model")
    remote = _copy_model(tiny_dir, root / "remote-tokenizer")
    config = json.loads((remote / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})
    (remote / "tokenizer_config.json").write_text(json.dumps(config))
    (remote / "evil.py").write_text(f"import os\nos.system('touch {root / 'MARKER-tokenizer'}')\n")
    return {**tiny_store, "dir": root, "bad": files, "pickled": pickled, "remote": remote}


def _checkpointed(work: dict, name: str) -> Path:
    """A finished stage-1 run of 2 steps with a checkpoint after each (step 2 is the latest)."""
    out = work["dir"] / name
    result = run_sgeo_batch([_resume_into(out, work)])[0]
    assert result["code"] == 0, result["stderr"][-2000:]
    return out


def _resume_into(out: Path, work: dict) -> list:
    return ["train", "--stage", "1", "--model", "tiny", "--data", work["stage1"], "--store", work["store"],
            "--out", out, "--max-steps", "2", "--save-every", "1", *TRAIN]  # fmt: skip


def test_damaged_and_crafted_checkpoints_are_refused_and_never_run(work):
    from sgeo.jobs.train.checkpoints import write_digests

    template = _checkpointed(work, "trained")
    step = "checkpoints/step-0000002"
    cases = {}
    for name in ("crafted", "crafted_with_digests", "flipped", "truncated", "state", "latest"):
        shutil.copytree(template, work["dir"] / name)
        cases[name] = work["dir"] / name
    marker = work["dir"] / "MARKER-checkpoint"
    _crafted(cases["crafted"] / step / "mp_rank_00_model_states.pt", marker)
    _crafted(cases["crafted_with_digests"] / step / "mp_rank_00_model_states.pt", marker)
    write_digests(cases["crafted_with_digests"] / step)  # an adversary who rewrites the digests too
    optim = cases["flipped"] / step / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    data = bytearray(optim.read_bytes())
    data[len(data) // 2] ^= 0x40
    optim.write_bytes(bytes(data))
    states = cases["truncated"] / step / "mp_rank_00_model_states.pt"
    states.write_bytes(states.read_bytes()[:200])
    (cases["state"] / step / "trainer_state.json").write_text("{garbage")
    (cases["latest"] / "checkpoints" / "latest").write_text("../../../etc")

    results = run_sgeo_batch([_resume_into(cases[name], work) for name in cases])
    expected = {
        "crafted": "mp_rank_00_model_states.pt is not what was written",
        "crafted_with_digests": "never unpickles",
        "flipped": "zero_pp_rank_0_mp_rank_00_optim_states.pt is not what was written",
        "truncated": "mp_rank_00_model_states.pt is not what was written",
        "state": "trainer_state.json is damaged",
        "latest": "not a checkpoint",
    }
    for name, result in zip(cases, results, strict=True):
        assert_one_line_error(result, expected[name])
    assert not marker.exists()  # the crafted pickle never ran


def test_a_full_disk_at_checkpoint_time_is_one_line_and_loses_nothing(work):
    import resource
    import signal

    out = work["dir"] / "full-disk"

    def limited():  # writes past 1 MB fail with EFBIG, as on a full disk (the optimizer states are bigger)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = run_sgeo(*_resume_into(out, work), preexec_fn=limited)
    as_dict = {"args": ["train"], "code": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
    assert_one_line_error(as_dict, "cannot write checkpoint", "free space")
    assert not (out / "checkpoints" / "latest").exists()  # no half-written checkpoint is ever the latest
    again = run_sgeo_batch([_resume_into(out, work)])[0]  # space freed: the same command completes
    assert again["code"] == 0, again["stderr"][-2000:]
    assert (out / "checkpoints" / "latest").read_text() == "step-0000002"


def _peak_rss(command: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    """Run `sgeo ...` and sample the RSS of its whole process tree."""
    process = subprocess.Popen([sys.executable, "-m", "sgeo.cli", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    peak, stop = 0, threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate(timeout=timeout)
    stop.set()
    sampler.join()
    return subprocess.CompletedProcess(command, process.returncode, out, err), peak


def test_images_that_would_eat_memory_or_hang_are_refused_or_bounded(work):
    root = work["dir"]
    started = time.monotonic()
    results = run_sgeo_batch([
        ["ask", root / "strip.png", "What is this?", "--json"],
        ["ask", root / "pipe.jpg", "What is this?", "--json"],
        ["ask", "/dev/zero", "What is this?", "--json"],
    ])  # fmt: skip
    assert time.monotonic() - started < 120  # a fifo or /dev/zero never blocks the command
    assert_one_line_error(results[0], "aspect ratio over 25:1")
    assert_one_line_error(results[1], "not a regular file")
    assert_one_line_error(results[2], "not a regular file")
    wide, peak = _peak_rss(
        ["ask", str(root / "wide.png"), "What is this?", "--json", "--max-new-tokens", "2"]
    )
    assert wide.returncode == 0, wide.stderr[-2000:]
    assert peak < 1.5e9, f"a 16000x800 image took {peak / 1e9:.2f} GB"


def test_extract_records_bad_files_and_goes_on(work, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("strip.png", "ok.png"):
        shutil.copy(work["dir"] / name, images / name)
    os.mkfifo(images / "pipe.jpg")
    os.symlink("/dev/zero", images / "zero.png")
    store = tmp_path / "store.zarr"
    result = run_sgeo("extract", "--dataset", "folder", "--root", images, "--store", store, "--num-cpus", "2",
                      "--shard-size", "4", timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 ok, 3 failed" in result.stdout
    errors = dict(
        zip(
            *open_extracted(store).manifest().select(["image_id", "error"]).to_pydict().values(),
            strict=True,
        )
    )
    assert "aspect ratio" in errors["strip.png"] and "not a regular file" in errors["pipe.jpg"]
    assert "outside the dataset root" in errors["zero.png"] or "not a regular file" in errors["zero.png"]


def test_broken_samples_are_refused_before_the_first_step(work):
    commands = []
    for name, path in work["bad"].items():
        extra = ["--model-max-length", "300"] if name == "late_image" else []
        commands.append(["train", "--stage", "2", "--data", path, "--store", work["store"], "--out",
                         work["dir"] / f"samples-{name}", "--max-steps", "1", *TRAIN, *extra])  # fmt: skip
    results = run_sgeo_batch(commands)
    why = {"role": "from 'bot'", "swapped": "turns must alternate", "int_value": "of type int",
           "string_turns": "is a str, not an object", "late_image": "cut through an image"}  # fmt: skip
    for name, result in zip(work["bad"], results, strict=True):
        assert_one_line_error(result, f"bad-{name}", why[name], "--skip-invalid")
        assert "step/s" not in result["stderr"]  # refused before the first step
    # with --skip-invalid the same file trains without the bad sample
    result = run_sgeo_batch([[*commands[0], "--skip-invalid"]])[0]
    assert result["code"] == 0 and "skipped 1 invalid" in result["stderr"], result["stderr"][-2000:]


def test_nonsense_options_and_files_are_one_line_errors(work, tmp_path):
    base = [
        "train",
        "--stage",
        "2",
        "--data",
        work["stage2"],
        "--store",
        work["store"],
        "--out",
        tmp_path / "o",
    ]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    ok = work["dir"] / "ok.png"
    cases = [
        ([*base, "--lr", "-1"], "--lr must be a positive number"),
        ([*base, "--lr", "nan"], "--lr must be a positive number"),
        ([*base, "--model-max-length", "0"], "--model-max-length must be positive"),
        ([*base, "--lora-r", "-1"], "--lora-r must be 0"),
        (
            ["train", "--stage", "2", "--data", work["stage2"], "--store", a_file, "--out", tmp_path / "o"],
            "is a file",
        ),
        ([*base[:-1], a_file], "--out"),
        (["ask", ok, "hi?", "--device", "tpu"], "--device must be cpu, cuda"),
        (["score", work["dir"] / "latin1.jsonl", "--bench", "synthetic"], "not UTF-8"),
        (["cache", "plan", "--model", "tiny", "--images", "-5"], "--images must be a positive"),
        (["ask", ok, "hi?", "--model", work["pickled"], "--json"], "cannot load"),
        (["ask", ok, "hi?", "--model", work["remote"], "--json"], "tokenizer"),
    ]
    results = run_sgeo_batch([command for command, _ in cases])
    for (_, fragment), result in zip(cases, results, strict=True):
        assert_one_line_error(result, fragment)
    assert not (work["dir"] / "MARKER-model").exists() and not (work["dir"] / "MARKER-tokenizer").exists()


def test_a_loss_that_explodes_stops_the_run_naming_the_step(work, tmp_path):
    result = run_sgeo_batch([["train", "--stage", "1", "--data", work["stage1"], "--store", work["store"], "--out",
                              tmp_path / "o", "--max-steps", "4", "--lr", "1e30", *TRAIN]])[0]  # fmt: skip
    assert_one_line_error(result, "the loss is", "at step", "samples")


def test_eval_refuses_a_wrong_root_and_another_model_and_redoes_missing_images(work, tmp_path, tiny_dir):
    from sgeo.pipeline.answers import read_answers

    synthetic = Path(work["stage2"]).parent
    data = synthetic / "eval" / "bench.json"
    out = tmp_path / "eval"
    common = [
        "eval",
        "--bench",
        "synthetic",
        "--data",
        data,
        "--out",
        out,
        "--max-new-tokens",
        "2",
        "--limit",
        "4",
    ]
    (refused,) = run_sgeo_batch([[*common, "--image-root", "/nonexistent"]])
    assert_one_line_error(refused, "none of the", "--image-root")
    assert not (out / "answers.jsonl").exists()  # nothing was recorded as answered
    (answered,) = run_sgeo_batch([common])
    assert answered["code"] == 0, answered["stderr"][-2000:]
    assert len(read_answers(out / "answers.jsonl")) == 4
    # another model into the same --out is refused (the answers file records who answered)
    other = _copy_model(tiny_dir, tmp_path / "other-model", fusion="concat")
    # an image that was missing when first asked is asked again once it is there
    answers = read_answers(out / "answers.jsonl")
    first = answers[0]
    from sgeo.pipeline.answers import rewrite_answers

    rewrite_answers(out / "answers.jsonl", [{**first, "pred": "", "error": "no such file"}, *answers[1:]])
    results = run_sgeo_batch([[*common, "--model", other], common])
    assert_one_line_error(results[0], "another model")
    assert results[1]["code"] == 0 and "3 already answered" in results[1]["stdout"], results[1]["stdout"]
    again = read_answers(out / "answers.jsonl")
    assert len(again) == 4 and not any("error" in r for r in again)


def test_a_local_extract_listens_on_loopback_only(work, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 30), (i * 50, 80, 120)).save(images / f"{i}.png")
    process = subprocess.Popen(
        [sys.executable, "-m", "sgeo.cli", "extract", "--dataset", "folder", "--root", str(images), "--store",
         str(tmp_path / "s.zarr"), "--num-cpus", "2", "--shard-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    listening, deadline = set(), time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        try:
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.Error:
            break
        pids = {p.pid for p in tree}
        for connection in psutil.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN and connection.pid in pids:
                listening.add(connection.laddr.ip)
        time.sleep(0.2)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    assert listening, "no listening socket was seen while the extract ran"
    assert listening <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, listening
