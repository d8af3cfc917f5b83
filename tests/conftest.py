"""Shared fixtures: one tiny preset per test session (in its own $SGEO_HOME) and one small synthetic dataset.

Everything is real (real loaders, real files); sizes are small so the suite runs on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def sgeo_home(tmp_path_factory) -> Path:
    """A fresh $SGEO_HOME for the session; subprocesses inherit it."""
    home = tmp_path_factory.mktemp("sgeo_home")
    os.environ["SGEO_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU in tests; also keeps DeepSpeed quiet
    return home


@pytest.fixture(scope="session")
def tiny_dir(sgeo_home) -> Path:
    from sgeo.model import resolve_model

    return resolve_model("tiny").directory


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """(model, processor) of the tiny preset with towers, fp32 on CPU. Do not mutate: load your own to train."""
    from sgeo.model import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic spatial dataset (training images, captions, QA and a held-out bench)."""
    from sgeo.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, 24, seed=0, n_eval=8)
    return root


@pytest.fixture(scope="module")
def s3_bucket():
    """A local S3 server (moto, 127.0.0.1 only) with an empty bucket "feats"; yields fsspec storage options."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, **credentials).create_bucket(Bucket="feats")
    yield {
        "key": "test",
        "secret": "test",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    server.stop()


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, synthetic_root, tiny) -> dict:
    """Every training image of `synthetic_root` in a bf16 feature store of the tiny preset (written by
    `sgeo.pipeline.store_writer.write_store` from `encode_images`, without Ray), with the stage-1 and stage-2 JSONs. The store is in the
    form sgeo wrote before a store per tower (both towers in one group, `legacy_fingerprint`): such stores
    still train, and every training test shows it."""
    from sgeo.model import resolve_model
    from sgeo.pipeline.images import load_image
    from sgeo.pipeline.store_writer import write_store

    model, processor = tiny
    work = tmp_path_factory.mktemp("tiny_store")
    ids = sorted({s["image"] for name in ("captions.json", "spatial_qa.json")
                  for s in json.loads((synthetic_root / name).read_text())})  # fmt: skip
    pixels = processor.preprocess_images([load_image(synthetic_root / i)[0] for i in ids])
    features = model.encode_images(pixels)  # clip [N, T, Dc], moge [N, L, T, Dm]
    write_store(
        str(work / "store.zarr"), image_ids=ids, paths=[str(synthetic_root / i) for i in ids],
        fingerprint=legacy_fingerprint(resolve_model("tiny"), processor.preprocessing_spec(), "bf16"),
        features={"clip": features["clip"], "moge": features["moge"]}, dtype="bf16", shard_size=8,
    )  # fmt: skip
    return {"store": str(work / "store.zarr"), "root": synthetic_root, "ids": ids,
            "stage1": synthetic_root / "captions.json", "stage2": synthetic_root / "spatial_qa.json"}  # fmt: skip


def run_sgeo_batch(commands: list[list], env: dict | None = None, timeout: float = 900) -> list[dict]:
    """Several command lines through `sgeo.cli.main` in one fresh process (tests/cli_batch.py), imports
    paid once; one {"args", "code", "stdout", "stderr"} per command."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump([[str(a) for a in command] for command in commands], spec)
    full_env = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, str(REPO / "tests" / "cli_batch.py"), spec.name], env=full_env,
                         capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
    os.unlink(spec.name)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def assert_one_line_error(result: dict, *fragments: str) -> None:
    """A user error: non-zero exit, no traceback, at most 3 stderr lines, one `error:` line naming the fragments."""
    where = f"sgeo {' '.join(result['args'])}"
    assert result["code"] != 0, f"{where} exited 0:\n{result['stdout'][-1500:]}"
    assert "Traceback" not in result["stderr"], f"{where}:\n{result['stderr'][-3000:]}"
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    lines = [line for line in result["stderr"].splitlines() if line.strip() and not _is_noise(line)]
    assert len(errors) == 1 and len(lines) <= 3, f"{where}:\n{result['stderr'][-3000:]}"
    for fragment in fragments:
        assert fragment in errors[0], f"{where}: {errors[0]}"


def _is_noise(line: str) -> bool:
    # progress bars (tqdm: "desc:  50%|###  | 1/2 [...]") and the trainer's [sgeo train] log lines are not errors
    return line.startswith("[sgeo train]") or bool(re.search(r"\d+%\|.*\|", line))


def run_sgeo(*args: str, check: bool = False, timeout: float = 600, env: dict | None = None, **kwargs):
    """Run the real `sgeo` console entry point in a subprocess; returns CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "sgeo.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"sgeo {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture
def in_process(monkeypatch):
    """Runs `run_train` in this process: one torch thread (as the CLI picks on 2 cores with a loader worker),
    and the launcher variables it sets are removed afterwards so subprocesses start clean."""
    import torch

    saved_env, threads = dict(os.environ), torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    os.environ.clear()
    os.environ.update(saved_env)
    torch.set_num_threads(threads)


@contextmanager
def serving(args: list, work: Path, env: dict | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`sgeo serve ARGS --port 0` in a subprocess, its output in `work`: (base URL, process) once it listens;
    stopped on leaving."""
    log = work / "stdout.txt"
    with open(log, "w") as stdout, open(work / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sgeo.cli", "serve", "--port", "0", *map(str, args)],
            stdout=stdout, stderr=stderr, env={**os.environ, **(env or {})},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "sgeo serve: http://" not in log.read_text():
            if process.poll() is not None:
                raise AssertionError(
                    f"sgeo serve exited {process.returncode}:\n{(work / 'stderr.txt').read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("sgeo serve did not start in 180 s")
            time.sleep(0.2)
        yield log.read_text().split("sgeo serve: ")[1].split()[0].rstrip("/"), process
    finally:
        process.terminate()
        process.wait(timeout=30)


def open_extracted(stores, towers=("clip", "moge"), storage_options=None):
    """The stores `sgeo extract` wrote under `stores` (one per tower), read as one (rows, manifest, read)."""
    from sgeo.pipeline.feature_set import open_feature_set

    return open_feature_set([str(stores)], list(towers), storage_options=storage_options)


def legacy_fingerprint(resolved, preprocessing: dict, dtype: str) -> dict:
    """The fingerprint sgeo gave a store before a store per tower: each tower's at the top level, beside the
    preprocessing and the encoding (equal, for the tiny preset, to what f0ff0e4's `encoder_fingerprint` wrote)."""
    from sgeo.model.tower_fingerprint import tower_fingerprint

    fingerprint = {
        spec.name: tower_fingerprint(spec, resolved.towers[spec.name].path) for spec in resolved.config.towers
    }
    return {**fingerprint, "preprocessing": preprocessing, "dtype": dtype}
