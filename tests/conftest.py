"""Shared fixtures: one tiny preset per test session (in its own $SGEO_HOME) and one small synthetic dataset.

Everything is real (real loaders, real files); sizes are small so the suite runs on 2 CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    from sgeo.model import resolve_model_dir

    return resolve_model_dir("tiny")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """(model, processor) of the tiny preset with towers, fp32 on CPU. Do not mutate: load your own to train."""
    from sgeo.model import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic spatial dataset (training images, captions, QA and a held-out bench)."""
    from sgeo.pipeline.synthetic import generate_synthetic

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
