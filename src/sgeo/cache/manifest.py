"""The manifest (one parquet row per image) and the per-shard commit markers it is merged from.

manifest.parquet columns: row, image_id, path (source path as given), content_hash, width, height,
status ("pending" | "ok" | "failed"), error (one line, or null). It is written at create (all pending)
and rewritten by finalize with the statuses of the commit markers. A marker is canonical JSON, so the same
shard always gives the same bytes; per array <name> of the store, the sha256 of its shard's stored words
and of each row (a store of clip and moge: "clip_sha256", "moge_sha256", row_sha256 {"clip", "moge"}):

    {"<name>_sha256": ..., "records": [{"content_hash", "error", "height", "image_id", "row", "status",
     "width"}, ...], "row_sha256": {"<name>": [...]}, "rows": [start, stop], "shard": k}
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sgeo.cache.fingerprint import canonical_json
from sgeo.errors import SgeoError, one_line

SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("content_hash", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)
MAX_ERROR_CHARS = 500


def initial_table(image_ids: list[str], paths: list[str]) -> pa.Table:
    n = len(image_ids)
    nulls = [None] * n
    return pa.table(
        {
            "row": np.arange(n, dtype=np.int64),
            "image_id": [str(i) for i in image_ids],
            "path": [str(p) for p in paths],
            "content_hash": nulls,
            "width": nulls,
            "height": nulls,
            "status": ["pending"] * n,
            "error": nulls,
        },
        schema=SCHEMA,
    )


def to_parquet_bytes(table: pa.Table) -> bytes:
    """Deterministic parquet bytes (fixed codec and options; no timestamps in the file)."""
    buf = io.BytesIO()
    pq.write_table(table.cast(SCHEMA), buf, compression="zstd", compression_level=3, write_statistics=True)
    return buf.getvalue()


def from_parquet_bytes(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data)).cast(SCHEMA)


def normalize_records(records: list[dict], rows: range) -> list[dict]:
    """Check the per-row records a writer hands in and bring them to the stored form."""
    if len(records) != len(rows):
        raise SgeoError(
            f"shard rows {rows.start}..{rows.stop - 1} need {len(rows)} records, got {len(records)}"
        )
    out = []
    for row, rec in zip(rows, records, strict=True):
        status = rec.get("status")
        if status not in ("ok", "failed"):
            raise SgeoError(f"row {row}: status must be 'ok' or 'failed', got {status!r}")
        error = rec.get("error")
        if status == "failed":
            error = (
                one_line(str(error), MAX_ERROR_CHARS, ellipsis=True)
                if error
                else "failed (no error message given)"
            )
        else:
            error = None
        norm = {"status": status, "error": error}
        for key in ("width", "height"):
            value = rec.get(key)
            norm[key] = None if value is None else int(value)
        norm["content_hash"] = None if rec.get("content_hash") is None else str(rec["content_hash"])
        out.append(norm)
    return out


def marker_bytes(k: int, rows: range, image_ids: list[str], records: list[dict], digests: dict) -> bytes:
    body = {
        "shard": k,
        "rows": [rows.start, rows.stop],
        **digests,
        "records": [
            {"row": row, "image_id": image_id, **rec}
            for row, image_id, rec in zip(rows, image_ids, records, strict=True)
        ],
    }
    return (canonical_json(body) + "\n").encode()


def parse_marker(data: bytes, k: int, names) -> dict:
    """The marker of shard k of a store with arrays `names`: it must hold every array's digests."""
    try:
        marker = json.loads(data)
        rows = marker["rows"][1] - marker["rows"][0]
        if marker["shard"] != k or len(marker["records"]) != rows:
            raise ValueError("shard number or row count does not match")
        for name in names:
            if not isinstance(marker[f"{name}_sha256"], str):
                raise ValueError(f"{name}_sha256 is not a digest")
            if "row_sha256" in marker and len(marker["row_sha256"][name]) != rows:
                raise ValueError(f"row_sha256 of {name} does not have one digest per row")
        return marker
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise SgeoError(
            f"commit marker of shard {k} is corrupt ({e}); delete it and rerun extract to redo the shard"
        ) from e


def merge(base: pa.Table, markers: dict[int, dict]) -> pa.Table:
    """The manifest with per-row fields taken from the commit markers; rows without a marker are pending."""
    n = base.num_rows
    status = ["pending"] * n
    error: list[str | None] = [None] * n
    content_hash: list[str | None] = [None] * n
    width: list[int | None] = [None] * n
    height: list[int | None] = [None] * n
    for k in sorted(markers):
        for rec in markers[k]["records"]:
            r = rec["row"]
            status[r], error[r], content_hash[r] = rec["status"], rec["error"], rec["content_hash"]
            width[r], height[r] = rec["width"], rec["height"]
    return pa.table(
        {
            "row": base.column("row"),
            "image_id": base.column("image_id"),
            "path": base.column("path"),
            "content_hash": pa.array(content_hash, pa.string()),
            "width": pa.array(width, pa.int32()),
            "height": pa.array(height, pa.int32()),
            "status": pa.array(status, pa.string()),
            "error": pa.array(error, pa.string()),
        },
        schema=SCHEMA,
    )


def status_counts(table: pa.Table) -> dict[str, int]:
    statuses = table.column("status").to_pylist()
    return {s: statuses.count(s) for s in ("ok", "failed", "pending")}
