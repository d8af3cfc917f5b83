"""Looking at stores from outside: info (what is there), verify (is it sound), plan (how big will it be)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import zarr

from sgeo.cache import layout
from sgeo.cache.fingerprint import fingerprint_digest
from sgeo.cache.layout import CLIP, COMMITS, MOGE
from sgeo.cache.manifest import parse_marker, status_counts
from sgeo.cache.store import FeatureStore
from sgeo.errors import SgeoError

VERIFY_BLOCK_ROWS = 8  # rows per zarr read while hashing a shard: bounds memory at reference dims


def human_bytes(n: float) -> str:
    """Decimal units, 3 significant digits: 5.9 MB, 3.29 TB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n} B"


def plan_store_bytes(
    num_images: int,
    clip_shape: tuple[int, int],
    moge_shape: tuple[int, int, int],
    dtype: str = "bf16",
    shard_size: int = 64,
) -> dict:
    """Bytes a finished uncompressed store takes: per image (features + shard index entries) and in total.

    Reference dims (576 x 1024 and 4 x 576 x 1024, 16-bit): 1.18 MB + 4.72 MB = 5.9 MB per image,
    3.29 TB for LCS-558K (558,128 images). The manifest and markers add about 100 bytes per image.
    """
    itemsize = layout.storage_dtype(dtype).numpy.itemsize
    clip_b = int(math.prod(clip_shape)) * itemsize
    moge_b = int(math.prod(moge_shape)) * itemsize
    shards = -(-num_images // shard_size)
    index_b = 2 * shards * layout.index_nbytes(shard_size)
    total = num_images * (clip_b + moge_b) + index_b
    return {
        "num_images": num_images,
        "clip_bytes_per_image": clip_b,
        "moge_bytes_per_image": moge_b,
        "bytes_per_image": clip_b + moge_b,
        "index_bytes": index_b,
        "total_bytes": total,
        "summary": (
            f"{human_bytes(clip_b + moge_b)}/image (clip {human_bytes(clip_b)} + moge {human_bytes(moge_b)}), "
            f"{human_bytes(total)} for {num_images:,} images"
        ),
    }


def store_info(url: str, storage_options: dict | None = None) -> dict:
    """What a store holds: sizes, dtype, fingerprint digest, per-status counts, shards committed/total."""
    store = FeatureStore.open(url, storage_options=storage_options)
    counts = status_counts(store.manifest())
    committed = store.committed_shards()
    files = store._loc.files()
    array_bytes = sum(size for key, size in files.items() if key.startswith((f"{CLIP}/c/", f"{MOGE}/c/")))
    plan = plan_store_bytes(store.num_rows, store.clip_shape, store.moge_shape, store.dtype, store.shard_size)
    rows_written = sum(len(store.shard_rows(k)) for k in committed)
    return {
        "url": store.url,
        "schema_version": store.attributes["sgeo_schema_version"],
        "num_rows": store.num_rows,
        "dtype": store.dtype,
        "compressor": store.compressor,
        "clip_shape": list(store.clip_shape),
        "moge_shape": list(store.moge_shape),
        "shard_size": store.shard_size,
        "shards_committed": len(committed),
        "shards_total": store.num_shards,
        "counts": counts,
        "fingerprint_digest": store.fingerprint_digest,
        "bytes": sum(files.values()),
        "array_bytes": array_bytes,
        "bytes_per_image": array_bytes / rows_written if rows_written else None,
        "raw_bytes_per_image": plan["bytes_per_image"],
    }


def verify_store(url: str, storage_options: dict | None = None, *, deep: bool = True) -> list[str]:
    """Problems found in a store; an empty list means it is sound.

    Checks attributes, array metadata, the manifest, every commit marker against the manifest, that every
    committed shard object exists with the right size, and (deep) reads every committed shard through zarr
    and compares its sha256 with the marker's.
    """
    try:
        store = FeatureStore.open(url, storage_options=storage_options)
        base = store._base_table()
    except SgeoError as e:
        return [str(e)]
    except Exception as e:  # a damaged store can fail anywhere (parquet, json)
        return [f"store {url} cannot be opened: {type(e).__name__}: {e}"]
    problems: list[str] = []
    loc, attrs, n, s = store._loc, store.attributes, store.num_rows, store.shard_size
    if fingerprint_digest(attrs["fingerprint"]) != attrs["fingerprint_digest"]:
        problems.append("fingerprint_digest does not match the fingerprint in zarr.json")
    if attrs["num_shards"] != -(-n // s):
        problems.append(f"num_shards={attrs['num_shards']} but {n} rows in shards of {s} need {-(-n // s)}")

    arrays = {}
    for name, row_shape in ((CLIP, store.clip_shape), (MOGE, store.moge_shape)):
        try:
            arr = zarr.open_array(loc.zarr_store, path=name, mode="r", zarr_format=3)
        except Exception as e:
            problems.append(f"array {name} cannot be opened: {type(e).__name__}: {e}")
            continue
        want = {"shape": (n, *row_shape), "chunks": (1, *row_shape), "shards": (s, *row_shape)}
        have = {"shape": arr.shape, "chunks": arr.chunks, "shards": arr.shards}
        for key in want:
            if tuple(have[key] or ()) != want[key]:
                problems.append(f"array {name} has {key} {have[key]}, expected {want[key]}")
        if arr.dtype != layout.storage_dtype(store.dtype).numpy:
            problems.append(
                f"array {name} has dtype {arr.dtype}, expected {layout.storage_dtype(store.dtype).numpy}"
            )
        arrays[name] = arr

    ids = base.column("image_id").to_pylist()
    if base.column("row").to_pylist() != list(range(n)):
        problems.append("manifest.parquet rows are not 0..N-1 in order")
    if len(set(ids)) != len(ids):
        problems.append("manifest.parquet has duplicate image ids")

    markers: dict[int, dict] = {}
    for name in loc.listdir(COMMITS):
        k = layout.parse_marker_name(name)
        if k is None:
            continue  # temp files of a killed writer
        if k >= store.num_shards:
            problems.append(
                f"commit marker {name} is for shard {k}, but the store has {store.num_shards} shards"
            )
            continue
        try:
            markers[k] = parse_marker(loc.cat(f"{COMMITS}/{name}"), k)
        except SgeoError as e:
            problems.append(str(e))
    for k, marker in sorted(markers.items()):
        rows = store.shard_rows(k)
        if marker["rows"] != [rows.start, rows.stop] or [r["row"] for r in marker["records"]] != list(rows):
            problems.append(
                f"commit marker of shard {k} covers rows {marker['rows']}, expected {[rows.start, rows.stop]}"
            )
            continue
        for rec in marker["records"]:
            if rec["image_id"] != ids[rec["row"]]:
                problems.append(
                    f"commit marker of shard {k}: row {rec['row']} is {rec['image_id']!r} but the manifest "
                    f"says {ids[rec['row']]!r}"
                )
                break
            if rec["status"] not in ("ok", "failed"):
                problems.append(f"commit marker of shard {k}: row {rec['row']} has status {rec['status']!r}")
                break

    files = loc.files()
    readable = set(markers)
    for k in sorted(markers):
        rows = store.shard_rows(k)
        for name, row_shape in ((CLIP, store.clip_shape), (MOGE, store.moge_shape)):
            key = layout.shard_key(name, k, 1 + len(row_shape))
            size = files.get(key)
            if size is None:
                problems.append(f"{name} shard {k} is committed but its object {key} is missing")
                readable.discard(k)
            elif store.compressor is None and size != layout.shard_nbytes_uncompressed(
                len(rows), row_shape, s
            ):
                want = layout.shard_nbytes_uncompressed(len(rows), row_shape, s)
                problems.append(
                    f"{name} shard {k} object {key} has {size} bytes, expected {want} (truncated?)"
                )
                readable.discard(k)
            elif size < layout.index_nbytes(s):
                problems.append(f"{name} shard {k} object {key} has {size} bytes, too small for its index")
                readable.discard(k)

    if deep and len(arrays) == 2:
        for k in sorted(readable):
            problems.extend(_check_shard_data(arrays, store.shard_rows(k), k, markers[k]))

    statuses = base.column("status").to_pylist()
    for r, status in enumerate(statuses):
        if status == "pending":
            continue
        k = r // s
        if k not in markers:
            problems.append(f"manifest.parquet says row {r} is {status} but shard {k} has no commit marker")
            break
        rec = markers[k]["records"][r - k * s]
        if rec["status"] != status:
            problems.append(
                f"manifest.parquet says row {r} is {status} but its commit marker says {rec['status']}"
            )
            break
    counts = {st: statuses.count(st) for st in ("ok", "failed", "pending")}
    if attrs.get("counts") != counts:
        problems.append(
            f"zarr.json counts {attrs.get('counts')} differ from manifest.parquet statuses {counts}"
        )
    return problems


def _check_shard_data(arrays: dict, rows: range, k: int, marker: dict) -> list[str]:
    problems = []
    failed = [r["row"] - rows.start for r in marker["records"] if r["status"] == "failed"]
    for name, arr in arrays.items():
        h = hashlib.sha256()
        try:
            for start in range(rows.start, rows.stop, VERIFY_BLOCK_ROWS):
                block = arr[start : min(start + VERIFY_BLOCK_ROWS, rows.stop)]
                h.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8))
                for i in failed:
                    if start <= rows.start + i < start + len(block) and np.any(block[rows.start + i - start]):
                        problems.append(f"{name} row {rows.start + i} is failed but not zero")
        except Exception as e:
            problems.append(f"{name} shard {k} cannot be read: {type(e).__name__}: {e}")
            continue
        if h.hexdigest() != marker[f"{name}_sha256"]:
            problems.append(f"{name} shard {k} content differs from its commit marker (sha256 mismatch)")
    return problems


def format_info(info: dict) -> str:
    """Human-readable lines for `sgeo store info`."""
    return json.dumps(info, indent=2, sort_keys=False)
