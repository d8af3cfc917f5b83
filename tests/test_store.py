"""The feature store on real Zarr v3 files, real parquet and a real (moto) S3 server."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import zarr

from sgeo.cache import FeatureStore, StoreMismatchError, plan_store_bytes, store_info, verify_store
from sgeo.errors import SgeoError
from sgeo.pipeline.features import encode

T, DC, L, DM = 6, 8, 3, 4
N, S = 10, 4  # 3 shards: 4 + 4 + 2 rows
FAILED_ROW = 5
FP = {
    "clip": {"weights": "ab12" * 16, "layer": -2},
    "moge": {"weights": "cd34" * 16, "layers": [20, 21, 22, 23]},
    "preprocessing": {"size": 336, "mean": [0.48145466, 0.4578275, 0.40821073], "mode": "pad"},
    "dtype": "bf16",
}
SHAPES = {"clip": (T, DC), "moge": (L, T, DM)}
IDS = [f"img{i:03d}" for i in range(N)]
PATHS = [f"/data/{i}.jpg" for i in IDS]


def gaussian(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, T, DC), dtype=np.float32), rng.standard_normal(
        (N, L, T, DM), dtype=np.float32
    )


def make_features(dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stored words of gaussian features in the store encoding `dtype` (through the one codec)."""
    return tuple(encode(torch.from_numpy(a), dtype) for a in gaussian(seed))


def records_for(rows: range) -> list[dict]:
    return [
        {
            "status": "failed",
            "error": "cannot decode\nJPEG",
            "content_hash": None,
            "width": None,
            "height": None,
        }
        if r == FAILED_ROW
        else {"status": "ok", "error": None, "content_hash": f"h{r}", "width": 640 + r, "height": 480}
        for r in rows
    ]


def create(url: str, dtype: str = "bf16", **kw) -> FeatureStore:
    kw = {"image_ids": IDS, "paths": PATHS, "fingerprint": FP, **kw}
    return FeatureStore.create(url, shapes=SHAPES, dtype=dtype, shard_size=S, **kw)


def write(store: FeatureStore, clip: np.ndarray, moge: np.ndarray, shards=None) -> None:
    for k in store.pending_shards() if shards is None else shards:
        r = store.shard_rows(k)
        store.write_shard(k, {"clip": clip[r.start : r.stop], "moge": moge[r.start : r.stop]}, records_for(r))


def expected(clip: np.ndarray, moge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clip, moge = clip.copy(), moge.copy()
    clip[FAILED_ROW] = 0
    moge[FAILED_ROW] = 0
    return clip, moge


def file_hashes(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def test_roundtrip_manifest_and_plain_zarr_reader(tmp_path):
    url = str(tmp_path / "f.zarr")
    clip, moge = make_features("bf16")
    store = create(url, attributes={"encoders": {"clip": "tiny"}})
    assert store.pending_shards() == [0, 1, 2] and store.shard_rows(2) == range(8, 10)
    assert set(store.manifest().column("status").to_pylist()) == {"pending"}
    write(store, clip, moge)
    want_clip, want_moge = expected(clip, moge)

    order = np.array([9, 0, 5, 5, 3])  # any order, duplicates, across shards
    got = store.read(order)
    assert list(got) == ["clip", "moge"]
    got_clip, got_moge = got["clip"], got["moge"]
    assert got_clip.dtype == np.uint16 and np.array_equal(got_clip, want_clip[order])
    assert np.array_equal(got_moge, want_moge[order])
    one_clip = store.read(7)["clip"]
    assert one_clip.shape == (T, DC) and np.array_equal(one_clip, want_clip[7])
    assert np.array_equal(store.read(slice(2, 9))["moge"], want_moge[2:9])

    reopened = pickle.loads(pickle.dumps(FeatureStore.open(url, expect_fingerprint=FP, shard_reader=False)))
    assert not reopened.reads_shards()  # the zarr read path (kept through pickling): both paths agree
    assert np.array_equal(reopened.read(order)["clip"], want_clip[order])

    table = store.manifest()
    status = table.column("status").to_pylist()
    assert status[FAILED_ROW] == "failed" and status.count("ok") == N - 1
    assert table.column("error").to_pylist()[FAILED_ROW] == "cannot decode JPEG"
    assert table.column("width").to_pylist()[3] == 643
    assert table.column("image_id").to_pylist().index("img007") == table.column("row").to_pylist()[7] == 7
    store.finalize()
    assert verify_store(url) == []

    # no sgeo below: plain zarr + pyarrow + the bf16 recipe from store.py
    g = zarr.open_group(url, mode="r")
    attrs = g.attrs.asdict()
    assert attrs["sgeo_dtype"] == "bfloat16" and attrs["counts"] == {"ok": 9, "failed": 1, "pending": 0}
    assert attrs["encoders"] == {"clip": "tiny"} and attrs["preprocessing"]["size"] == 336
    assert g["clip"].shape == (N, T, DC) and g["moge"].shards == (S, L, T, DM)
    manifest = pq.read_table(os.path.join(url, "manifest.parquet"))
    assert manifest.column("status").to_pylist() == status
    words = g["moge"][3]
    floats = (words.astype(np.uint32) << 16).view(np.float32)
    source = gaussian(0)[1][3]  # the float32 values whose bf16 words were written
    assert np.array_equal(floats, torch.from_numpy(source).to(torch.bfloat16).float().numpy())
    assert np.all(np.abs(floats - source) <= np.abs(source) * 2.0**-8)  # bf16 round to nearest


def test_killed_shard_is_redone_and_store_is_bit_identical(tmp_path):
    clip, moge = make_features("bf16")
    clean = create(str(tmp_path / "clean"))
    write(clean, clip, moge)
    clean.finalize()

    url = str(tmp_path / "resumed")
    first = create(url)
    write(first, clip, moge, shards=[2])
    killed_clip, killed_moge = make_features("bf16", seed=9)  # other bytes: the rerun must rewrite them
    # shard 0's arrays written, then killed before its marker: what a write leaves without its marker
    write(first, killed_clip, killed_moge, shards=[0])
    first.uncommit([0])
    stale = os.path.join(url, "clip", "c", "1", "0", "0.deadbeef.partial")  # a zarr temp file of a kill
    os.makedirs(os.path.dirname(stale))
    Path(stale).write_bytes(b"half")

    resumed = create(url)  # the rerun: same fingerprint and image list reopen the store
    assert resumed.pending_shards() == [0, 1]
    status = resumed.manifest().column("status").to_pylist()
    assert status[:8] == ["pending"] * 8 and status[8:] == ["ok", "ok"]
    with pytest.raises(SgeoError, match="not extracted yet"):
        resumed.read([1])
    write(resumed, clip, moge, shards=[1, 0])  # order of completion does not matter
    resumed.finalize()
    assert not os.path.exists(stale)
    assert file_hashes(url) == file_hashes(str(tmp_path / "clean"))


def test_mismatches_are_refused(tmp_path):
    url = str(tmp_path / "f.zarr")
    store = create(url)
    clip, moge = make_features("bf16")
    write(store, clip, moge, shards=[0])
    other = {**FP, "clip": {**FP["clip"], "weights": "ee99" * 16}}
    with pytest.raises(StoreMismatchError, match=r"clip\.weights=ab12ab12ab12\.\. but the model has ee99"):
        FeatureStore.open(url, expect_fingerprint=other)
    with pytest.raises(StoreMismatchError, match=r"clip\.weights"):
        create(url, fingerprint=other)
    with pytest.raises(StoreMismatchError, match=r"preprocessing\.mode"):
        FeatureStore.open(
            url, expect_fingerprint={**FP, "preprocessing": {**FP["preprocessing"], "mode": "crop"}}
        )
    with pytest.raises(StoreMismatchError, match="another image list.*row 3"):
        create(url, image_ids=IDS[:3] + ["zzz"] + IDS[4:])
    with pytest.raises(StoreMismatchError, match="holds 10 images but 9"):
        create(url, image_ids=IDS[:9], paths=PATHS[:9])
    with pytest.raises(StoreMismatchError, match="shard_size"):
        FeatureStore.create(url, image_ids=IDS, paths=PATHS, fingerprint=FP, shapes=SHAPES, shard_size=5)
    # tuples vs lists do not count as a difference; the committed shard survives a reopen
    same = {**FP, "moge": {**FP["moge"], "layers": (20, 21, 22, 23)}}
    assert create(url, fingerprint=same).committed_shards() == {0}
    with pytest.raises(SgeoError, match="clip is float32 but this bf16 store takes uint16"):
        store.write_shard(
            1, {"clip": clip[4:8].astype(np.float32), "moge": moge[4:8]}, records_for(range(4, 8))
        )
    with pytest.raises(SgeoError, match="shape"):
        store.write_shard(2, {"clip": clip[4:8], "moge": moge[4:8]}, records_for(range(8, 12)))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(SgeoError, match="not an sgeo feature store"):
        create(str(tmp_path / "photos"))
    with pytest.raises(SgeoError, match="no feature store"):
        FeatureStore.open(str(tmp_path / "nothing"))


def test_interrupted_create_starts_over(tmp_path):
    url = str(tmp_path / "f.zarr")
    create(url)
    os.unlink(os.path.join(url, "manifest.parquet"))  # killed before create's last step
    with pytest.raises(SgeoError, match="incomplete"):
        FeatureStore.open(url)
    store = create(url, image_ids=IDS[:5], paths=PATHS[:5])  # nothing was committed: any list may start over
    assert store.num_rows == 5 and store.pending_shards() == [0, 1]


@pytest.mark.parametrize(
    "dtype,url",
    [("fp16", "dir"), ("fp32", "dir"), ("bf16-zstd", "dir"), ("fp8", "dir"), ("fp8", "memory://st")],
)
def test_every_encoding_stores_its_words(tmp_path, dtype, url):
    """Each encoding's words go in and come back bit for bit, through the shard reader and through zarr."""
    url = str(tmp_path / "f.zarr") if url == "dir" else f"{url}-{dtype}"
    clip, moge = make_features(dtype, seed=1)
    store = create(url, dtype=dtype)
    write(store, clip, moge)
    store.finalize()
    want_clip, want_moge = expected(clip, moge)
    reader = FeatureStore.open(url, expect_encoding=dtype)
    assert reader.reads_shards()  # the shard reader understands this codec chain
    got_clip, got_moge = reader.read(np.arange(N)[::-1]).values()
    assert got_clip.dtype == clip.dtype and np.array_equal(got_clip, want_clip[::-1])
    assert np.array_equal(got_moge, want_moge[::-1])
    g = zarr.open_group(url, mode="r")
    assert g.attrs["dtype"] == dtype and g["clip"].dtype == clip.dtype
    assert np.array_equal(g["moge"][:], want_moge)
    assert verify_store(url) == []


def test_s3_store(s3_bucket):
    url = "s3://feats/coco/f.zarr"
    clip, moge = make_features("bf16", seed=2)
    store = create(url, storage_options=s3_bucket)
    write(store, clip, moge, shards=[0, 2])
    info = store_info(url, storage_options=s3_bucket)
    assert info["shards_committed"] == 2 and info["counts"] == {"ok": 6, "failed": 0, "pending": 4}
    write(store, clip, moge)
    store.finalize()
    want_clip, want_moge = expected(clip, moge)
    opened = FeatureStore.open(url, expect_fingerprint=FP, storage_options=s3_bucket)
    assert opened.reads_shards()  # ranged GETs, not zarr's per-call overhead
    got_clip, got_moge = opened.read([8, 1, 5]).values()
    assert np.array_equal(got_clip, want_clip[[8, 1, 5]]) and np.array_equal(got_moge, want_moge[[8, 1, 5]])
    info = store_info(url, storage_options=s3_bucket)
    assert info["counts"] == {"ok": 9, "failed": 1, "pending": 0} and info["shards_total"] == 3
    assert info["array_bytes"] > N * (T * DC + L * T * DM) * 2
    assert verify_store(url, storage_options=s3_bucket) == []


def test_verify_finds_damage(tmp_path):
    url = str(tmp_path / "f.zarr")
    store = create(url)
    write(store, *make_features("bf16"))
    store.finalize()
    assert verify_store(url) == []

    moge0 = Path(url, "moge", "c", "0", "0", "0", "0")
    data = moge0.read_bytes()
    moge0.write_bytes(data[: len(data) // 2])
    problems = verify_store(url)
    assert any("moge shard 0" in p and "truncated" in p for p in problems), problems
    with pytest.raises(SgeoError, match="moge shard 0"):
        FeatureStore.open(url).read([1])

    moge0.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])  # same size, one bit off
    assert any("sha256 mismatch" in p for p in verify_store(url))
    moge0.write_bytes(data)
    os.unlink(os.path.join(url, "clip", "c", "1", "0", "0"))
    problems = verify_store(url)
    assert len(problems) == 1 and "clip shard 1 is committed but its object" in problems[0]


def test_plan_reference_dims():
    ref = {"clip": (576, 1024), "moge": (4, 576, 1024)}
    plan = plan_store_bytes(558128, ref, "bf16")
    assert plan["bytes_per_image"] == pytest.approx(5.9e6, rel=0.01)
    assert plan["array_bytes_per_image"] == {"clip": 576 * 1024 * 2, "moge": 4 * 576 * 1024 * 2}
    assert plan["total_bytes"] == pytest.approx(3.3e12, rel=0.01)
    assert "3.29 TB" in plan["summary"]
    fp8 = plan_store_bytes(558128, ref, "fp8")
    assert fp8["bytes_per_image"] == 5 * 576 * (1024 + 4) <= 3.0e6  # codes + a float32 scale per token row
    assert fp8["read_bytes_per_s"] == pytest.approx(44 * fp8["bytes_per_image"])  # 8 GPUs at LLaVA's pace
    with pytest.raises(SgeoError, match="--images must be a positive"):
        plan_store_bytes(-5, ref)


def test_cache_plan_cli_lists_every_encoding_with_the_effect_of_lossy_ones():
    from conftest import run_sgeo

    result = run_sgeo(
        "cache", "plan", "--model", "spatialgeo-7b", "--images", "558128", "--gpus", "16", check=True
    )
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:] if line.strip()}
    assert "5.9 MB" in lines["bf16"] and "3.29 TB" in lines["bf16"] and "519 MB/s" in lines["bf16"]  # 16 GPUs
    assert "2.96 MB" in lines["fp8"] and "1.65 TB" in lines["fp8"]
    assert lines["fp8:"].startswith("fp8: measured"), result.stdout  # a lossy encoding comes with its effect
    bad = run_sgeo("cache", "plan", "--images", "-5")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --images must be a positive number of images, got -5"
    ]
