"""`sgeo cache verify [--repair]`: is a store sound, and dropping what is not so that extract redoes it.

Verification reads through zarr (not the shard reader training uses), so it is an independent check:
attributes, array metadata against the store's encoding, the manifest, every commit marker against the
manifest, every committed shard object's presence and size, and (deep) every committed shard's content
against the sha256 of the shard and of each row in its marker. Repair drops the commit markers of the
shards with a problem, under the writer lock, and rewrites the manifest: their rows become pending, and a
rerun of the same `sgeo extract` redoes exactly those shards.
"""

from __future__ import annotations

import hashlib

import numpy as np
import zarr

from sgeo.cache import layout
from sgeo.cache.fingerprint import fingerprint_digest
from sgeo.cache.layout import COMMITS
from sgeo.cache.location import Location
from sgeo.cache.lock import writer_lock
from sgeo.cache.manifest import parse_marker
from sgeo.cache.meta import read_group_attrs
from sgeo.cache.store import FeatureStore
from sgeo.errors import SgeoError

VERIFY_BLOCK_ROWS = 8  # rows per zarr read while hashing a shard: bounds memory at reference dims

Problem = tuple[int | None, str]  # (shard it is about, or None; one line)


def verify_store(url: str, storage_options: dict | None = None, *, deep: bool = True) -> list[str]:
    """Problems found in a store; an empty list means it is sound."""
    return [message for _, message in find_problems(url, storage_options, deep=deep)]


def repair_store(url: str, storage_options: dict | None = None) -> dict:
    """Drop the commit markers of the shards with a problem and rewrite the manifest (under the writer lock).

    Returns {"dropped": shards uncommitted, "problems": what is still wrong afterwards}. Refuses, changing
    nothing, a path that holds no feature store (the writer lock would leave a commits/ folder there)."""
    _refuse_non_store(url, storage_options)
    with writer_lock(url, storage_options):
        found = find_problems(url, storage_options)
        bad = sorted({k for k, _ in found if k is not None})
        if bad or found:
            try:
                store = FeatureStore.open(url, storage_options=storage_options)
                store.uncommit(bad)
                store.finalize()
            except SgeoError:
                pass  # an unopenable store stays as it is; the problems say why
        return {"dropped": bad, "problems": verify_store(url, storage_options)}


def _refuse_non_store(url: str, storage_options: dict | None) -> None:
    loc = Location(url, storage_options)
    try:
        attrs = read_group_attrs(loc)
    except SgeoError:
        return  # a zarr.json that does not parse: a damaged store; repair reports its problems
    if attrs is None or "sgeo_schema_version" not in attrs:
        raise SgeoError(
            f"{loc.url} is not a feature store (no sgeo zarr.json); nothing to repair there, check the path"
        )


def find_problems(url: str, storage_options: dict | None = None, *, deep: bool = True) -> list[Problem]:
    try:
        store = FeatureStore.open(url, storage_options=storage_options)
        base = store.base_table()
    except SgeoError as e:
        return [(None, str(e))]
    except Exception as e:  # a damaged store can fail anywhere (parquet, json)
        return [(None, f"store {url} cannot be opened: {type(e).__name__}: {e}")]
    problems: list[Problem] = []
    loc, attrs, n, s, enc = store.location, store.attributes, store.num_rows, store.shard_size, store.encoding
    if fingerprint_digest(attrs["fingerprint"]) != attrs["fingerprint_digest"]:
        problems.append((None, "fingerprint_digest does not match the fingerprint in zarr.json"))
    if attrs["num_shards"] != layout.num_shards(n, s):
        problems.append(
            (
                None,
                f"num_shards={attrs['num_shards']} but {n} rows in shards of {s} need {layout.num_shards(n, s)}",
            )
        )

    arrays = {}
    for name, stored in store.stored_shapes.items():
        try:
            arr = zarr.open_array(loc.zarr_store, path=name, mode="r", zarr_format=3)
        except Exception as e:
            problems.append((None, f"array {name} cannot be opened: {type(e).__name__}: {e}"))
            continue
        want = {"shape": (n, *stored), "chunks": (1, *stored), "shards": (s, *stored)}
        have = {"shape": arr.shape, "chunks": arr.chunks, "shards": arr.shards}
        for key in want:
            if tuple(have[key] or ()) != want[key]:
                problems.append((None, f"array {name} has {key} {have[key]}, expected {want[key]}"))
        if arr.dtype != enc.words:
            problems.append((None, f"array {name} has dtype {arr.dtype}, expected {enc.words} ({enc.name})"))
        arrays[name] = arr

    ids = base.column("image_id").to_pylist()
    if base.column("row").to_pylist() != list(range(n)):
        problems.append((None, "manifest.parquet rows are not 0..N-1 in order"))
    if len(set(ids)) != len(ids):
        problems.append((None, "manifest.parquet has duplicate image ids"))

    markers = _markers(store, ids, problems)
    files = loc.files()
    readable = set(markers)
    for k in sorted(markers):
        for name in store.shapes:
            problem = store.shard_size_problem(k, name, files.get(store.shard_key(name, k)))
            if problem:
                problems.append((k, problem))
                readable.discard(k)

    if deep and len(arrays) == len(store.shapes):  # every array opens: their content can be checked
        for k in sorted(readable):
            problems.extend((k, p) for p in _check_shard_data(arrays, store.shard_rows(k), k, markers[k]))

    statuses = base.column("status").to_pylist()
    for r, status in enumerate(statuses):
        if status == "pending":
            continue
        k = r // s
        if k not in markers:
            problems.append(
                (None, f"manifest.parquet says row {r} is {status} but shard {k} has no commit marker")
            )
            break
        rec = markers[k]["records"][r - k * s]
        if rec["status"] != status:
            problems.append(
                (
                    None,
                    f"manifest.parquet says row {r} is {status} but its commit marker says {rec['status']}",
                )
            )
            break
    counts = {st: statuses.count(st) for st in ("ok", "failed", "pending")}
    if attrs.get("counts") != counts:
        problems.append(
            (None, f"zarr.json counts {attrs.get('counts')} differ from manifest.parquet statuses {counts}")
        )
    return problems


def _markers(store: FeatureStore, ids: list[str], problems: list[Problem]) -> dict[int, dict]:
    """The parseable commit markers that agree with the manifest; the others are problems of their shard."""
    markers: dict[int, dict] = {}
    for name in store.location.listdir(COMMITS):
        k = layout.parse_marker_name(name)
        if k is None:
            continue  # temp files of a killed writer, the writer lock
        if k >= store.num_shards:
            problems.append(
                (k, f"commit marker {name} is for shard {k}, but the store has {store.num_shards} shards")
            )
            continue
        try:
            marker = parse_marker(store.location.cat(f"{COMMITS}/{name}"), k, store.shapes)
        except SgeoError as e:
            problems.append((k, str(e)))
            continue
        rows = store.shard_rows(k)
        if marker["rows"] != [rows.start, rows.stop] or [r["row"] for r in marker["records"]] != list(rows):
            problems.append(
                (
                    k,
                    f"commit marker of shard {k} covers rows {marker['rows']}, expected {[rows.start, rows.stop]}",
                )
            )
            continue
        bad = next((r for r in marker["records"] if r["image_id"] != ids[r["row"]]), None)
        if bad is not None:
            problems.append(
                (
                    k,
                    f"commit marker of shard {k}: row {bad['row']} is {bad['image_id']!r} but the manifest "
                    f"says {ids[bad['row']]!r}",
                )  # fmt: skip
            )
            continue
        bad = next((r for r in marker["records"] if r["status"] not in ("ok", "failed")), None)
        if bad is not None:
            problems.append((k, f"commit marker of shard {k}: row {bad['row']} has status {bad['status']!r}"))
            continue
        markers[k] = marker
    return markers


def _check_shard_data(arrays: dict, rows: range, k: int, marker: dict) -> list[str]:
    problems = []
    failed = {r["row"] for r in marker["records"] if r["status"] == "failed"}
    for name, arr in arrays.items():
        h, row_digests = hashlib.sha256(), []
        try:
            for start in range(rows.start, rows.stop, VERIFY_BLOCK_ROWS):
                block = np.ascontiguousarray(arr[start : min(start + VERIFY_BLOCK_ROWS, rows.stop)])
                h.update(block.reshape(-1).view(np.uint8))
                for i, words in enumerate(block):
                    row_digests.append(hashlib.sha256(words.reshape(-1).view(np.uint8)).hexdigest())
                    if start + i in failed and np.any(words):
                        problems.append(f"{name} row {start + i} is failed but not zero")
        except Exception as e:
            problems.append(f"{name} shard {k} cannot be read: {type(e).__name__}: {e}")
            continue
        if h.hexdigest() != marker[f"{name}_sha256"]:
            problems.append(f"{name} shard {k} content differs from its commit marker (sha256 mismatch)")
        elif "row_sha256" in marker and marker["row_sha256"].get(name) != row_digests:
            problems.append(f"{name} shard {k}: the row digests in its commit marker do not match its rows")
    return problems
