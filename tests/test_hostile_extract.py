"""Hostile inputs to `sgeo extract` and the feature store: an image that failed and was fixed since, a disk
that fills up, a store URL that no worker process can see, `--repair` pointed at a folder that is not a
store. (The store's own damage cases are in test_store_integrity.py, other hostile inputs in test_hostile.py.)

Real parts: the CLI entry point in this process on one local Ray cluster for the module (as test_extract.py;
each extract run costs seconds, so the runs are shared through one module fixture), real image files, and a
really full disk (a small tmpfs).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cli_batch import run
from conftest import assert_one_line_error, open_extracted

SHARD, BATCH, LIMIT = 3, 2, 6  # 6 images in 2 shards; shard 0 is encoded as the batches [0, 1] and [2]
FIXED, BROKEN = 1, 4  # rows whose image is corrupt at first; FIXED gets a valid file before the retry


def sgeo(*args) -> dict:
    """The real CLI entry point in this process (so it runs on the module's Ray cluster)."""
    return run([str(a) for a in args])


def extract(root: Path, store, *extra) -> dict:
    fixed = f"--shard-size {SHARD} --batch-size {BATCH} --limit {LIMIT} --num-cpus 2".split()
    return sgeo("extract", "--dataset", "synthetic", "--root", root, "--store", store, *fixed, *extra)


def succeeded(result: dict) -> dict:
    assert result["code"] == 0, result["stderr"][-3000:]
    return result


def store_files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def statuses(store: Path) -> list[str]:
    return open_extracted(store).manifest().column("status").to_pylist()


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the in-process runs of this module."""
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=256 << 20, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def retried(ray_cluster, synthetic_root, tmp_path_factory) -> dict:
    """Two corrupt images extracted, a plain rerun, one image fixed, a rerun with --retry-failed; then a
    fresh extraction of the dataset as it is now (the fixed image good, the other still corrupt)."""
    from sgeo.pipeline.datasets import get_dataset

    work = tmp_path_factory.mktemp("retry")
    root = work / "data"
    shutil.copytree(synthetic_root, root)
    ids = [ref.image_id for ref in get_dataset("synthetic", root).images()][:LIMIT]
    good = (root / ids[FIXED]).read_bytes()
    for row in (FIXED, BROKEN):
        (root / ids[row]).write_bytes((root / ids[row]).read_bytes()[:100])  # a PNG cut short
    store = work / "feats.zarr"
    first = succeeded(extract(root, store))
    plain = succeeded(extract(root, store))
    before_retry = statuses(store)
    (root / ids[FIXED]).write_bytes(good)  # the user fixes one of them
    plain_after_fix = succeeded(extract(root, store))
    retry = succeeded(extract(root, store, "--retry-failed"))
    reference = work / "fresh.zarr"
    succeeded(extract(root, reference))
    return {"root": root, "store": store, "reference": reference, "first": first, "plain": plain,
            "plain_after_fix": plain_after_fix, "before_retry": before_retry, "retry": retry}  # fmt: skip


def test_rerun_counts_earlier_failures_and_retry_failed_redoes_them(retried):
    """A plain rerun says how many rows failed earlier and how to retry them (not "0 failed") and changes
    nothing; --retry-failed redoes exactly the failed rows: the fixed one now holds what a fresh extraction
    gives, the one still broken stays failed, and every other byte of the store is as before."""
    assert "4 ok, 2 failed" in retried["first"]["stdout"], retried["first"]["stdout"]
    assert "rerun with --retry-failed after fixing them" in retried["first"]["stdout"]
    for plain in (retried["plain"], retried["plain_after_fix"]):
        assert "0 failed (and 2 earlier)" in plain["stdout"], plain["stdout"]
        assert "2 rows failed earlier; rerun with --retry-failed after fixing them" in plain["stdout"]
    want = ["ok"] * LIMIT
    want[FIXED] = want[BROKEN] = "failed"
    assert retried["before_retry"] == want  # a plain rerun redoes nothing, even once the file is fixed

    out = retried["retry"]["stdout"]
    assert "retried 2 images that had failed: 1 now ok, 1 still failed" in out, out
    assert "1 ok, 1 failed, 4 skipped (already committed)" in out, out
    want[FIXED] = "ok"
    assert statuses(retried["store"]) == want
    # the fresh extraction of the same files: identical to the bit, manifest and commit markers included
    got, fresh = store_files(retried["store"]), store_files(retried["reference"])
    assert sorted(got) == sorted(fresh)
    assert [name for name in fresh if got[name] != fresh[name]] == []


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs (a real filesystem that fills up) and a function that resizes it."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def resize(size: str, first: bool = False) -> None:
        options = f"size={size}" if first else f"remount,size={size}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True,
                       capture_output=True)  # fmt: skip

    try:
        resize("4k", first=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {e}")
    yield mount, resize
    subprocess.run(["umount", str(mount)], check=False, capture_output=True)


def test_full_disk_is_one_line_and_a_rerun_after_freeing_space_completes(retried, small_disk):
    """No space while the store is created (driver) or while a worker writes a shard: one line naming the
    path and saying that a rerun resumes; with space again the rerun gives the fresh extraction's bytes."""
    mount, resize = small_disk
    store = mount / "feats.zarr"
    largest = max(p.stat().st_size for p in retried["reference"].rglob("*") if p.is_file())
    assert largest > 64 << 10  # so 64 KiB hold the store's metadata but not its first shard

    for size in ("4k", "64k"):  # one page: full while creating; 64 KiB: full at the first shard
        resize(size)
        result = extract(retried["root"], store)
        assert_one_line_error(result, "the disk is full", str(mount), "rerun the same command")
    # the store was created: the last failure came from a worker writing a shard
    assert (store / "clip" / "manifest.parquet").is_file()

    resize("16m")
    succeeded(extract(retried["root"], store))
    got, fresh = store_files(store), store_files(retried["reference"])
    assert sorted(got) == sorted(fresh)
    assert [name for name in fresh if got[name] != fresh[name]] == []


def test_store_that_worker_processes_cannot_see_is_refused_before_any_work(synthetic_root):
    """memory:// lives in one process: refused in one line naming the schemes that work; nothing is written."""
    import fsspec

    memory = fsspec.filesystem("memory")
    for url in ("memory://feats", "simplecache::memory://feats"):
        result = sgeo("extract", "--root", synthetic_root, "--store", url)
        assert_one_line_error(result, url, "memory://", "local path", "s3://")
        assert not memory.exists("/feats")


def test_repair_refuses_a_folder_that_is_not_a_store_and_creates_nothing(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"not a store")
    before = listing(folder)
    result = sgeo("cache", "verify", "--repair", folder)
    assert_one_line_error(result, str(folder), "not a feature store")
    assert listing(folder) == before  # no commits/ left behind by the writer lock
    missing = tmp_path / "nowhere"
    assert_one_line_error(sgeo("cache", "verify", "--repair", missing), "not a feature store")
    assert not missing.exists()
