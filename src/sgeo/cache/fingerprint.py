"""Feature fingerprints: what made the features in a store, as a JSON dict plus a stable sha256 digest.

A fingerprint is any JSON-able dict; the extract job builds it from the weights hash per encoder, the
layer choice, the preprocessing (image size, mean, std, resize/crop/pad mode), the dtype and the feature
shapes. Two fingerprints are equal when their canonical JSON is equal (tuples and lists, numpy scalars and
Python numbers compare alike); the digest is the sha256 of that canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from sgeo.cache.layout import StoreMismatchError
from sgeo.errors import SgeoError

_MISSING = object()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the same dict always gives the same string."""
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=_jsonable
        )
    except (TypeError, ValueError) as e:
        raise SgeoError(
            f"fingerprint is not plain JSON ({e}); use str/int/float/bool/list/dict values"
        ) from e


def canonicalize(fingerprint: dict) -> dict:
    """The fingerprint as stored: a JSON round trip (tuples become lists, numpy scalars become numbers)."""
    if not isinstance(fingerprint, dict):
        raise SgeoError(f"fingerprint must be a dict, got {type(fingerprint).__name__}")
    return json.loads(canonical_json(fingerprint))


def fingerprint_digest(fingerprint: dict) -> str:
    """sha256 hex digest of the canonical JSON of a fingerprint."""
    return hashlib.sha256(canonical_json(fingerprint).encode()).hexdigest()


def first_difference(stored: Any, expected: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first (in sorted key order) dotted key whose values differ, with both values; None if equal."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        for key in sorted(set(stored) | set(expected)):
            sub = f"{prefix}.{key}" if prefix else str(key)
            a, b = stored.get(key, _MISSING), expected.get(key, _MISSING)
            if a is _MISSING or b is _MISSING:
                return sub, a, b
            found = first_difference(a, b, sub)
            if found:
                return found
        return None
    if canonical_json(stored) != canonical_json(expected):
        return prefix or "<fingerprint>", stored, expected
    return None


def short(value: Any, width: int = 12) -> str:
    """A value for a one-line message: long strings (hashes) cut to their head."""
    if value is _MISSING:
        return "<absent>"
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= width + 2 else text[:width] + ".."


def check_fingerprint(url: str, stored: dict, expected: dict) -> None:
    """Raise StoreMismatchError naming the first differing key when `expected` does not match the store."""
    diff = first_difference(canonicalize(stored), canonicalize(expected))
    if diff is None:
        return
    key, a, b = diff
    raise StoreMismatchError(
        f"store {url} was made with {key}={short(a)} but the model has {short(b)}; "
        "use another --store or the matching --model"
    )
