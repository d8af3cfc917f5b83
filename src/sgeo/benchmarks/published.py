"""Reading benchmark files as their authors publish them on the Hugging Face Hub: parquet tables whose image
columns hold the encoded files (the `datasets` Image feature: a struct {bytes, path}), JSONL beside an image
folder, several files making one benchmark.

Images embedded in a table are unpacked once, byte for byte, into `$SGEO_HOME/bench-images/<name>-<key>/`,
where the key changes whenever a data file changes (its path, size, modification time): the eval then reads
them like any image file, and the answers name each by the item's own id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from sgeo import atomic
from sgeo.errors import SgeoError, one_line
from sgeo.model.presets import sgeo_home

LETTERS = "ABCDEFGHIJ"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
)


def read_parquet(path: Path, expected: Iterable[str], layout: str) -> list[dict[str, Any]]:
    """The rows of a parquet file, refused in one line when it is not parquet or lacks a column of the
    published layout (`layout` names it, e.g. "CV-Bench's test_2d.parquet")."""
    import pyarrow.parquet as pq  # lazy: only benchmarks published as parquet need it

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise SgeoError(f"{path} is not a readable parquet file ({one_line(str(e), 160)}); "
                        f"pass {layout} as published") from None  # fmt: skip
    check_columns(path, table.column_names, expected, layout)
    return table.to_pylist()


def check_columns(path: Path, have: Iterable[str], expected: Iterable[str], layout: str) -> None:
    """Refuse a file of another version or layout, naming what was expected."""
    have = set(have)
    missing = [c for c in expected if c not in have]
    if missing:
        raise SgeoError(
            f"{path} lacks {', '.join(missing)}: not {layout} (its columns: {', '.join(sorted(have))})"
        )


def data_files(data: Path, patterns: tuple[str, ...], layout: str) -> list[Path]:
    """The files of a benchmark that `data` names: itself, or the files of a folder matching the first of
    `patterns` that matches any (sorted)."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise SgeoError(f"benchmark file not found: {data}")
    for pattern in patterns:
        found = sorted(p for p in data.glob(pattern) if p.is_file())
        if found:
            return found
    raise SgeoError(f"{data} holds none of {', '.join(patterns)}: not {layout}")


def unpack_root(name: str, located: Path) -> Path:
    """Where the images embedded in `located` (a file, or a folder of parquet files) are unpacked."""
    located = Path(located).resolve()
    files = sorted(located.rglob("*.parquet")) if located.is_dir() else [located]
    key = hashlib.sha256()
    for f in files:
        st = f.stat()
        key.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return sgeo_home() / "bench-images" / f"{name}-{key.hexdigest()[:16]}"


def image_bytes(cell: Any) -> bytes | None:
    """The encoded file of an image cell: the `datasets` Image struct {bytes, path}, or raw bytes."""
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    return bytes(cell) if isinstance(cell, (bytes, bytearray, memoryview)) and len(cell) else None


def _suffix(data: bytes, hint: str | None) -> str:
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    suffix = Path(hint or "").suffix.lower()
    return suffix if suffix.isascii() and 1 < len(suffix) <= 5 and suffix[1:].isalnum() else ".img"


def unpack_image(root: Path, name: str, cell: Any) -> str | None:
    """Write an embedded image once as root/<name> (the published file name, e.g. "img/2D/count/ade20k_10.png",
    or the item's id; made safe, and given the suffix of its bytes when it has none); its path relative to
    `root`, or None when the cell holds no image."""
    data = image_bytes(cell)
    if data is None:
        return None
    parts = [
        "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in part).strip(".")
        for part in str(name).replace("\\", "/").split("/")
    ]
    parts = [part for part in parts if part] or ["image"]
    if not Path(parts[-1]).suffix:
        parts[-1] += _suffix(data, cell.get("path") if isinstance(cell, dict) else None)
    rel = "/".join(parts)
    target = root / rel
    if not (target.is_file() and target.stat().st_size == len(data)):
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(target, data)  # a concurrent eval of the same file writes the same bytes
    return rel


def is_parquet(located: Path) -> bool:
    """Whether `located` is a parquet file, or a folder holding some (its images are then embedded)."""
    located = Path(located)
    return any(located.rglob("*.parquet")) if located.is_dir() else located.suffix == ".parquet"


def file_folder_or_unpacked(name: str, located: Path) -> Path:
    """The image rule of a benchmark published both ways: where its embedded images are unpacked (parquet),
    else the JSONL file's folder (image paths relative to it)."""
    located = Path(located)
    if is_parquet(located):
        return unpack_root(name, located)
    return located if located.is_dir() else located.parent


def unpacked_images(name: str) -> Callable[[Path], Path]:
    """The image rule (`Benchmark.image_root`) of benchmark `name` whose files embed its images: the folder
    its loader unpacks them into (`unpack_root`)."""
    return partial(unpack_root, name)


def files_or_unpacked(name: str) -> Callable[[Path], Path]:
    """The image rule of benchmark `name`, published both ways (`file_folder_or_unpacked`)."""
    return partial(file_folder_or_unpacked, name)
