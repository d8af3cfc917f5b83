"""Reading a JSON or JSONL file a user gave (training data, dataset annotations, benchmarks, answers).

One home for the ways such a file is refused in one line instead of a traceback:

- bytes that are not text: `UnicodeDecodeError` -> "FILE is not UTF-8 text (byte N)";
- nesting deeper than the parser can follow (`"[" * 200000`): json's C scanner raises `RecursionError`,
  which no caller expects -> "FILE is not valid JSON: nested too deeply";
- anything else malformed -> "FILE is not valid JSON: <json's message>" (`read_json`; `loads` leaves
  `JSONDecodeError` to callers that try another reading, e.g. JSON then JSONL).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError

NESTED_TOO_DEEPLY = "is not valid JSON: nested too deeply"


def read_text(path: Path, what: str = "", fix: str = "save it as UTF-8") -> str:
    """The text of `path`: UTF-8 (or UTF-16/32 with their byte-order marks, as `json.load` accepts them).

    `what` ("benchmark file ") prefixes the path in the error; `fix` says what to do."""
    data = Path(path).read_bytes()
    try:
        return data.decode(json.detect_encoding(data))
    except UnicodeDecodeError as error:
        raise SgeoError(f"{what}{path} is not UTF-8 text (byte {error.start}); {fix}") from None


def loads(text: str, where: str) -> Any:
    """`json.loads(text)`; nesting past the parser's recursion limit is one line naming `where` (a file, or
    "FILE line N"). `json.JSONDecodeError` is the caller's to handle."""
    try:
        return json.loads(text)
    except RecursionError:
        raise SgeoError(f"{where} {NESTED_TOO_DEEPLY}") from None


def read_json(path: Path, what: str = "") -> Any:
    """The JSON document in `path`, or one line saying why it is not one (`what` prefixes the path)."""
    text = read_text(path, what)
    try:
        return loads(text, f"{what}{path}")
    except json.JSONDecodeError as error:
        raise SgeoError(f"{what}{path} is not valid JSON: {error}") from None
