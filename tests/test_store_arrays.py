"""A feature store of any set of named arrays (one per vision tower, say), and the stores of the sgeo before
named arrays (clip + moge, tests/data/legacy_store_v1.zarr) read as {clip, moge}, written byte for byte."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import legacy_store as legacy
from sgeo.cache import FeatureStore, StoreMismatchError, store_info, verify_store
from sgeo.cache.layout import shard_key
from sgeo.errors import SgeoError
from sgeo.pipeline.features import encode

N, S = 7, 3  # 3 shards: 3 + 3 + 1 rows
FAILED_ROW = 4
IDS = [f"im{i}" for i in range(N)]
PATHS = [f"/d/{i}.png" for i in IDS]
FP = {"towers": ["siglip", "depth", "blocks"], "dtype": "x"}
ONE = {"dino": (5, 8)}
# ranks 2, 1 and 4, in an order that is neither sorted nor clip/moge
THREE = {"siglip": (6, 4), "depth": (4,), "blocks": (2, 3, 2, 4)}


def create(url: str, shapes: dict, dtype: str = "bf16", **kw) -> FeatureStore:
    return FeatureStore.create(
        url, **{"image_ids": IDS, "paths": PATHS, "fingerprint": {**FP, "dtype": dtype}, **kw},
        shapes=shapes, dtype=dtype, shard_size=S,
    )  # fmt: skip


def features(shapes: dict, dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: encode(torch.from_numpy(rng.standard_normal((N, *shape), dtype=np.float32)), dtype)
        for name, shape in shapes.items()
    }


def records(rows: range) -> list[dict]:
    return [{"status": "failed", "error": "bad"} if r == FAILED_ROW else {"status": "ok"} for r in rows]


def write(store: FeatureStore, data: dict[str, np.ndarray], shards=None) -> None:
    for k in store.pending_shards() if shards is None else shards:
        r = store.shard_rows(k)
        store.write_shard(k, {name: a[r.start : r.stop] for name, a in data.items()}, records(r))


def zeroed(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {name: a.copy() for name, a in data.items()}
    for a in out.values():
        a[FAILED_ROW] = 0
    return out


@pytest.mark.parametrize("shapes,dtype", [(ONE, "bf16"), (THREE, "bf16"), (THREE, "fp8")])
def test_any_arrays_write_read_and_verify(tmp_path, shapes, dtype):
    url = str(tmp_path / "f.zarr")
    data = features(shapes, dtype)
    store = create(url, shapes, dtype)
    assert store.array_names == list(shapes) and store.shapes == shapes
    write(store, data)
    store.finalize()
    want = zeroed(data)

    order = np.array([6, 0, FAILED_ROW, 2, 2])
    got = store.read(order)
    assert list(got) == list(shapes)  # the store's order
    for name in shapes:
        assert got[name].dtype == data[name].dtype and np.array_equal(got[name], want[name][order])
    last = list(shapes)[-1]
    subset = store.read(order, arrays=[last, list(shapes)[0]])  # the order asked
    assert list(subset) == list(dict.fromkeys([last, list(shapes)[0]]))
    assert np.array_equal(subset[last], want[last][order])
    one = store.read(5)
    assert {n: a.shape for n, a in one.items()} == {n: store.stored_shapes[n] for n in shapes}
    zarr_path = pickle.loads(pickle.dumps(FeatureStore.open(url, shard_reader=False)))
    assert not zarr_path.reads_shards()  # the zarr read path agrees with the shard reader
    assert all(np.array_equal(a, want[n][order]) for n, a in zarr_path.read(order).items())
    assert verify_store(url) == []

    # no sgeo: plain zarr finds the arrays, their order and their dimension names in the attributes
    g = zarr.open_group(url, mode="r")
    assert list(g.attrs["arrays"].items()) == [(n, list(s)) for n, s in shapes.items()]
    assert g.attrs["sgeo_schema_version"] == 2 and "clip_shape" not in g.attrs
    for name, shape in shapes.items():
        assert (
            g[name].shape == (N, *store.stored_shapes[name])
            and g[name].metadata.dimension_names[0] == "image"
        )
        assert g[name].metadata.dimension_names[-1] == "channel" and len(g[name].shape) == 1 + len(shape)
    if "blocks" in shapes:
        assert g["blocks"].metadata.dimension_names == ("image", "axis1", "layer", "token", "channel")
        assert g["depth"].metadata.dimension_names == ("image", "channel")

    info = store_info(url)
    assert list(info["arrays"]) == list(shapes)
    assert [a["shape"] for a in info["arrays"].values()] == [list(s) for s in shapes.values()]
    for name, a in info["arrays"].items():  # the bytes of each array's shard objects
        objects = [f for f in Path(url, name, "c").rglob("*") if f.is_file()]
        assert a["bytes"] == sum(f.stat().st_size for f in objects) > 0
    assert info["array_bytes"] == sum(a["bytes"] for a in info["arrays"].values())


@pytest.mark.parametrize("name", list(THREE))
def test_verify_and_read_find_a_flipped_byte_in_any_array(tmp_path, name):
    url = str(tmp_path / "f.zarr")
    store = create(url, THREE)
    write(store, features(THREE, "bf16"))
    store.finalize()
    obj = Path(url, shard_key(name, 1, THREE[name]))
    data = obj.read_bytes()
    obj.write_bytes(data[:5] + bytes([data[5] ^ 1]) + data[6:])  # row 3, same size
    problems = verify_store(url)
    assert problems == [f"{name} shard 1 content differs from its commit marker (sha256 mismatch)"], problems
    with pytest.raises(SgeoError, match=f"{name} row 3 read from {shard_key(name, 1, THREE[name])}"):
        FeatureStore.open(url).read([0, 3])
    others = [n for n in THREE if n != name]
    assert list(FeatureStore.open(url).read([3], arrays=others)) == others  # the other arrays still read


def test_resume_reopens_the_same_arrays_and_refuses_others(tmp_path):
    url = str(tmp_path / "f.zarr")
    store = create(url, THREE)
    data = features(THREE, "bf16")
    write(store, data, shards=[1])
    assert create(url, {n: list(s) for n, s in THREE.items()}).committed_shards() == {
        1
    }  # lists are shapes too

    cases = {
        "depth shape=(4,) but (5,) was asked": {**THREE, "depth": (5,)},
        "holds arrays siglip, depth, blocks but siglip, depth were asked": {"siglip": (6, 4), "depth": (4,)},
        "holds arrays siglip, depth, blocks but depth, siglip, blocks were asked": {
            n: THREE[n] for n in ("depth", "siglip", "blocks")
        },
        "holds arrays siglip, depth, blocks but siglip, depth, blocks, extra were asked": {
            **THREE,
            "extra": (2,),
        },
    }
    for message, shapes in cases.items():
        with pytest.raises(StoreMismatchError) as err:
            create(url, shapes)
        assert message in str(err.value) and "\n" not in str(err.value)
    assert create(url, THREE).committed_shards() == {1}  # nothing above changed the store


def test_bad_names_shapes_and_array_sets_are_one_line_errors(tmp_path):
    url = str(tmp_path / "f.zarr")
    for shapes, fragment in [
        ({}, "at least one array"),
        ({"Clip": (2, 3)}, "array name 'Clip' is not allowed"),
        ({"1x": (2, 3)}, "array name '1x'"),
        ({"a-b": (2,)}, "array name 'a-b'"),
        ({"commits": (2,)}, "array name 'commits'"),
        ({"row": (2,)}, "array name 'row'"),  # its digests would be the marker's row_sha256
        ({"zarr.json": (2,)}, "array name 'zarr.json'"),
        ({"ok": ()}, "shape of array 'ok' must be positive sizes"),
        ({"ok": (3, 0)}, "shape of array 'ok'"),
        ("clip", "shapes must map"),
    ]:
        with pytest.raises(SgeoError, match=fragment) as err:
            create(url, shapes)
        assert "\n" not in str(err.value)
    assert not Path(url).exists()  # refused before anything was written

    store = create(url, THREE)
    data = features(THREE, "bf16")
    rows = store.shard_rows(0)
    part = {n: a[rows.start : rows.stop] for n, a in data.items()}
    with pytest.raises(SgeoError, match=r"holds arrays siglip, depth, blocks: array 'depth' missing; pass"):
        store.write_shard(0, {n: a for n, a in part.items() if n != "depth"}, records(rows))
    with pytest.raises(SgeoError, match=r"no array 'clip' in the store; pass exactly those names"):
        store.write_shard(0, {**part, "clip": part["depth"]}, records(rows))
    with pytest.raises(SgeoError, match=r"depth has shape \(3, 5\) but shard rows need \(3, 4\)"):
        store.write_shard(0, {**part, "depth": np.zeros((3, 5), np.uint16)}, records(rows))
    assert store.committed_shards() == set()
    write(store, data)
    with pytest.raises(
        SgeoError, match=r"holds arrays siglip, depth, blocks: no array 'moge' in the store; read"
    ):
        store.read([0], arrays=["siglip", "moge"])
    assert list(store.read([0], arrays="depth")) == ["depth"]


def test_cache_info_lists_every_array(tmp_path):
    from conftest import run_sgeo_batch

    url = str(tmp_path / "f.zarr")
    store = create(url, THREE)
    write(store, features(THREE, "bf16"), shards=[0, 2])
    text, as_json = run_sgeo_batch([["cache", "info", url], ["cache", "info", url, "--json"]])
    assert text["code"] == 0 and as_json["code"] == 0, text["stderr"] + as_json["stderr"]
    arrays = json.loads(as_json["stdout"])["arrays"]
    assert list(arrays) == list(THREE) and arrays["blocks"]["shape"] == [2, 3, 2, 4]
    lines = text["stdout"].splitlines()
    at = lines.index("arrays:")
    assert [line.strip() for line in lines[at + 1 : at + 4]] == [
        "siglip:",
        "shape: [6, 4]",
        f"bytes: {arrays['siglip']['bytes']}",
    ]
    assert "  depth:" in lines and "    shape: [2, 3, 2, 4]" in lines


# ------------------------------------------------------------------ stores of the sgeo before named arrays


@pytest.fixture
def legacy_copy(tmp_path) -> str:
    url = str(tmp_path / "legacy.zarr")
    shutil.copytree(legacy.FIXTURE, url)
    return url


def test_a_legacy_store_opens_and_reads_as_clip_and_moge(legacy_copy):
    before = {p: p.read_bytes() for p in Path(legacy_copy).rglob("*") if p.is_file()}
    store = FeatureStore.open(legacy_copy, expect_fingerprint=legacy.FINGERPRINT)
    assert "arrays" not in store.attributes and store.attributes["sgeo_schema_version"] == 1
    assert store.shapes == {"clip": legacy.CLIP_SHAPE, "moge": legacy.MOGE_SHAPE}
    got, want = store.read(list(range(len(legacy.IDS)))), legacy.stored()
    assert list(got) == ["clip", "moge"] and all(np.array_equal(got[n], want[n]) for n in want)
    assert np.array_equal(store.read(2, arrays=["moge"])["moge"], want["moge"][2])
    assert verify_store(legacy_copy) == []
    info = store_info(legacy_copy)
    assert info["arrays"]["clip"]["shape"] == [3, 4] and info["arrays"]["moge"]["shape"] == [2, 3, 4]
    # the same writer resumes it (nothing to redo), with the same shapes given as a dict; no file changes
    resumed = FeatureStore.create(legacy_copy, image_ids=legacy.IDS, paths=legacy.PATHS,
                                  fingerprint=legacy.FINGERPRINT, shard_size=legacy.SHARD_SIZE,
                                  shapes={"clip": legacy.CLIP_SHAPE, "moge": legacy.MOGE_SHAPE})  # fmt: skip
    assert resumed.pending_shards() == []
    with pytest.raises(StoreMismatchError, match="holds arrays clip, moge but clip were asked"):
        FeatureStore.create(legacy_copy, image_ids=legacy.IDS, paths=legacy.PATHS, fingerprint=legacy.FINGERPRINT,
                            shard_size=legacy.SHARD_SIZE, shapes={"clip": legacy.CLIP_SHAPE})  # fmt: skip
    assert {p: p.read_bytes() for p in Path(legacy_copy).rglob("*") if p.is_file()} == before


def test_a_clip_and_moge_store_is_written_as_the_legacy_one(tmp_path):
    """Same data, same markers and shard objects byte for byte; the attributes the old sgeo reads are all
    there (schema version 1, clip_shape, moge_shape), with `arrays` beside them."""
    url = str(tmp_path / "new.zarr")
    store = FeatureStore.create(url, image_ids=legacy.IDS, paths=legacy.PATHS, fingerprint=legacy.FINGERPRINT,
                                shapes={"clip": legacy.CLIP_SHAPE, "moge": legacy.MOGE_SHAPE}, dtype="bf16",
                                shard_size=legacy.SHARD_SIZE)  # fmt: skip
    data = legacy.data()
    for k in range(store.num_shards):
        r = store.shard_rows(k)
        store.write_shard(k, {n: a[r.start : r.stop] for n, a in data.items()}, legacy.records(r))
    store.finalize()

    old, new = legacy.FIXTURE, Path(url)
    old_files = sorted(str(p.relative_to(old)) for p in old.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file()) == old_files
    for rel in old_files:
        if rel.startswith("commits/") or "/c/" in rel:  # markers and shard objects: sgeo's own bytes
            assert (new / rel).read_bytes() == (old / rel).read_bytes(), rel
    old_attrs = json.loads((old / "zarr.json").read_text())["attributes"]
    new_attrs = json.loads((new / "zarr.json").read_text())["attributes"]
    assert new_attrs.pop("arrays") == {"clip": [3, 4], "moge": [2, 3, 4]}
    assert new_attrs == old_attrs
    for name in ("clip", "moge"):
        meta = [json.loads((root / name / "zarr.json").read_text()) for root in (old, new)]
        assert meta[0]["attributes"] == meta[1]["attributes"]
        assert meta[0]["dimension_names"] == meta[1]["dimension_names"]
