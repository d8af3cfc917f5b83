"""Damaged and contended stores: every row checked against its sha256, one-line errors that name the file and
the repair, `sgeo cache verify --repair`, and the writer lock (local disk and a real moto S3 server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_sgeo
from sgeo.cache import FeatureStore, verify_store, writer_lock
from sgeo.errors import SgeoError
from test_store import IDS, N, create, expected, make_features, write


def flip_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def one_line_error(result) -> str:
    """The CLI's error line; exit 2, no traceback (progress lines may come before it)."""
    err = result.stderr.strip()
    assert result.returncode == 2 and "Traceback" not in err, (result.returncode, err[-3000:])
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and err.count("error:") == 1, err[-3000:]
    return last


@pytest.mark.parametrize("dtype", ["bf16", "bf16-zstd", "fp8"])
def test_a_flipped_byte_is_refused_naming_the_file(tmp_path, dtype):
    url = str(tmp_path / "f.zarr")
    store = create(url, dtype=dtype)
    clip, moge = make_features(dtype)
    write(store, clip, moge)
    store.finalize()
    shard1 = Path(url, "clip", "c", "1", "0", "0")  # rows 4..7
    flip_byte(shard1, at=30)  # inside row 4's chunk (compressed or not)
    reader = FeatureStore.open(url)
    other_shards = reader.read([0, 9])["clip"]  # other shards still read
    assert np.array_equal(other_shards, expected(clip, moge)[0][[0, 9]])
    with pytest.raises(SgeoError) as e:
        reader.read([9, 4])
    message = str(e.value)
    assert "clip" in message and "clip/c/1/0/0" in message and "\n" not in message, message
    assert "sgeo cache verify --repair" in message
    assert any("clip shard 1" in p for p in verify_store(url))  # verify checks compact shards too
    unchecked = FeatureStore.open(url, check_digests=False)  # the check is what refuses it
    if dtype != "bf16-zstd":  # a compressed chunk may fail to decompress instead: refused either way
        unchecked.read([4])


def test_a_marker_without_row_digests_checks_its_whole_shard_once(tmp_path):
    """Stores whose markers predate row digests: the shard sha256 is checked on first read instead."""
    url = str(tmp_path / "f.zarr")
    store = create(url)
    clip, moge = make_features("bf16")
    write(store, clip, moge)
    marker = Path(url, "commits", "000000.json")
    body = json.loads(marker.read_text())
    del body["row_sha256"]
    marker.write_text(json.dumps(body))
    assert np.array_equal(FeatureStore.open(url).read(2)["moge"], moge[2])
    flip_byte(
        Path(url, "moge", "c", "0", "0", "0", "0"), at=moge[0].nbytes + 7
    )  # in row 1, which is not read
    with pytest.raises(SgeoError, match=r"moge shard 0 \(moge/c/0/0/0/0\) does not match the sha256"):
        FeatureStore.open(url).read([2])


def test_broken_stores_are_one_line_errors(tmp_path):
    url = str(tmp_path / "f.zarr")
    store = create(url)
    clip, moge = make_features("bf16")
    write(store, clip, moge)
    store.finalize()

    a_file = tmp_path / "store.txt"
    a_file.write_text("not a store")
    for call in (lambda: FeatureStore.open(str(a_file)), lambda: create(str(a_file))):
        with pytest.raises(SgeoError, match="is a file, not a feature store directory"):
            call()

    manifest = Path(url, "manifest.parquet")
    good = manifest.read_bytes()
    manifest.write_bytes(good[: len(good) // 2])
    with pytest.raises(SgeoError, match=r"manifest.parquet is damaged .*rerun the same `sgeo extract`"):
        FeatureStore.open(url).manifest()
    resumed = create(url)  # the writer's rerun rebuilds it from its image list (markers agree)
    assert resumed.manifest().column("status").to_pylist().count("ok") == N - 1
    assert verify_store(url) == [f"zarr.json counts {resumed.attributes['counts']} differ from manifest.parquet "
                                 "statuses {'ok': 0, 'failed': 0, 'pending': 10}"]  # fmt: skip
    resumed.finalize()
    assert verify_store(url) == []

    shard = Path(url, "moge", "c", "2", "0", "0", "0")
    shard.unlink()
    with pytest.raises(SgeoError, match=r"moge shard 2 \(moge/c/2/0/0/0\) is missing although committed"):
        FeatureStore.open(url).read([8])
    with pytest.raises(SgeoError, match="moge shard 2 is committed but its object .* missing.*--repair"):
        create(url)  # extract's resume refuses to skip a damaged committed shard


def test_verify_repair_drops_damaged_shards_for_extract_to_redo(tmp_path):
    url = str(tmp_path / "f.zarr")
    store = create(url, dtype="fp8")
    clip, moge = make_features("fp8")
    write(store, clip, moge)
    store.finalize()
    flip_byte(Path(url, "moge", "c", "1", "0", "0", "0"))
    Path(url, "clip", "c", "2", "0", "0").unlink()

    result = run_sgeo("cache", "verify", url)
    assert result.returncode == 1 and "moge shard 1" in result.stderr and "clip shard 2" in result.stderr
    result = run_sgeo("cache", "verify", "--repair", url)
    assert result.returncode == 0, result.stderr
    assert "dropped the commit markers of shards [1, 2]" in result.stdout and f"{url}: ok" in result.stdout
    resumed = create(url, dtype="fp8")
    assert resumed.pending_shards() == [1, 2]
    write(resumed, clip, moge)  # what a rerun of extract does: only those shards
    resumed.finalize()
    assert verify_store(url) == [] and np.array_equal(
        resumed.read(list(range(N)))["moge"], expected(clip, moge)[1]
    )


HOLD = """
import sys, time
from sgeo.cache import writer_lock
with writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_writer_lock_refuses_or_waits_and_takes_over_a_dead_holder(tmp_path):
    url = str(tmp_path / "f.zarr")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url, "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SgeoError) as e:
            writer_lock(url).acquire()
        message = str(e.value)
        assert f"store {url} is being written by pid {holder.pid} on " in message and "-c" in message, message
        started = time.monotonic()
        with writer_lock(url, wait=30) as lock:  # waits for the holder to finish
            assert time.monotonic() - started > 0.5 and lock.record["pid"] == os.getpid()
            create(url)  # the lock file does not make the directory look like something else
    finally:
        holder.kill()
        holder.wait()
    assert not Path(url, "commits", "writer.lock").exists()  # released: the store's files are its own

    killed = subprocess.Popen([sys.executable, "-c", HOLD, url, "60"], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "held"
    killed.kill()
    killed.wait()
    assert json.loads(Path(url, "commits", "writer.lock").read_text())["pid"] == killed.pid  # left behind
    with writer_lock(url) as lock:  # a dead local process's lock is taken over
        assert lock.record["pid"] == os.getpid()


def test_a_second_extract_into_a_locked_store_refuses_in_one_line(tmp_path, synthetic_root):
    url = str(tmp_path / "f.zarr")  # extract writes f.zarr/clip and f.zarr/moge: another job holds the first
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, f"{url}/clip", "60"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        err = one_line_error(run_sgeo("extract", "--root", synthetic_root, "--store", url))
        assert f"is being written by pid {holder.pid} on " in err, err
    finally:
        holder.kill()
        holder.wait()
    a_file = tmp_path / "store.txt"
    a_file.write_text("")
    err = one_line_error(run_sgeo("extract", "--root", synthetic_root, "--store", a_file))
    assert "is a file, not a feature store directory" in err, err


def test_writer_lock_on_s3(s3_bucket):
    url = "s3://feats/locked.zarr"
    with writer_lock(url, s3_bucket) as lock:
        stale = {**lock.record, "host": "another-host", "pid": 1}
        with pytest.raises(SgeoError, match="being written by pid .* on "):
            writer_lock(url, s3_bucket).acquire()
    import fsspec

    fs = fsspec.filesystem("s3", **s3_bucket)
    fs.pipe_file("feats/locked.zarr/commits/writer.lock", json.dumps(stale).encode())
    with pytest.raises(
        SgeoError, match="pid 1 on another-host .* delete s3://feats/locked.zarr/commits/writer.lock"
    ):
        writer_lock(url, s3_bucket).acquire()  # another host's lock is never taken over
    fs.rm("feats/locked.zarr/commits/writer.lock")
    with writer_lock(url, s3_bucket):
        pass


def test_train_refuses_a_flipped_store_byte(tmp_path, synthetic_root, tiny):
    """The real trainer, through the CLI: a flipped byte in a shard stops it in one line naming the file.

    --num-workers 0: with loader workers, torch re-raises a worker's error with its traceback in the message
    (the trainer's to unwrap)."""
    import torch

    from sgeo.model import resolve_model
    from sgeo.model.tower_fingerprint import towers_fingerprint
    from sgeo.pipeline.features import encode

    model, processor = tiny
    captions = json.loads((synthetic_root / "captions.json").read_text())
    ids = sorted({s["image"] for s in captions})
    url = str(tmp_path / "store.zarr")
    store = FeatureStore.create(url, image_ids=ids, paths=ids, dtype="fp8", shard_size=32,
                                fingerprint=towers_fingerprint(resolve_model("tiny"), processor.preprocessing_spec(), "fp8"),
                                shapes=model.config.feature_shapes)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    clip = encode(torch.randn(len(ids), *model.config.feature_shapes["clip"], generator=g), "fp8")
    moge = encode(torch.randn(len(ids), *model.config.feature_shapes["moge"], generator=g), "fp8")
    store.write_shard(0, {"clip": clip, "moge": moge}, [{"status": "ok"}] * len(ids))
    store.finalize()
    flip_byte(Path(url, "moge", "c", "0", "0", "0", "0"), at=len(ids) // 2 * moge[0].nbytes + 7)
    result = run_sgeo("train", "--stage", "1", "--data", synthetic_root / "captions.json", "--store", url,
                      "--out", tmp_path / "out", "--batch-size", str(len(ids)), "--grad-accum", "1",
                      "--max-steps", "1", "--num-workers", "0")  # fmt: skip
    err = one_line_error(result)
    assert "moge row" in err and "moge/c/0/0/0/0" in err and "sha256" in err, err
    assert not (tmp_path / "out" / "model.safetensors").exists()


_ = IDS  # the shared test store's image ids (imported for the fixtures' helpers)
