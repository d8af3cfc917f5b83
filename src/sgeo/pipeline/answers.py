"""answers.jsonl, the file an eval writes as it goes: one record per question (`answer_record`), appended
line by line (`append_answer`), read back (`read_answers`, `read_scorable`) and replaced whole
(`rewrite_answers`).

Each line is one JSON object: {"question_id", "pred", "gt", "qa_info", ...} plus whatever the benchmark item
carried (`question`, `options`, bbox, ...), how it was asked, and for an item not answered why (`error` /
`skipped`: `unanswered_score` scores it). The format's one home, below the jobs that share it (`eval` and
`remote` write records, `score` reads them and writes the judge's verdicts back), so none of them imports
another for it. A killed eval leaves at most a truncated last line: readers skip it and `append_answer` cuts
it off before writing, so a resumed run answers that question again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sgeo import atomic
from sgeo.errors import SgeoError
from sgeo.pipeline.json_files import loads, read_text

ANSWERS_FILE = "answers.jsonl"  # its name in an eval's --out folder


def answer_record(
    item, pred: str, error: str | None = None, skipped: str | None = None, **extra
) -> dict[str, Any]:
    """One answers.jsonl line: what the scorer reads, everything the benchmark item carried, how it was
    asked (`extra`: protocol, seed, prompt) and, for an item not answered, why (`error` / `skipped`)."""
    record = {**item.to_record(pred), **extra}
    if len(item.images) > 1:
        record["images"] = list(item.images)
    if error is not None:
        record["error"] = error
    if skipped is not None:
        record["skipped"] = skipped
    return record


def read_answers(path: Path) -> list[dict[str, Any]]:
    """All records of an answers.jsonl; a truncated last line (a killed run) is skipped."""
    path = Path(path)
    if not path.is_file():
        raise SgeoError(f"answers file not found: {path}")
    lines = read_text(path, fix="pass the answers.jsonl that sgeo eval wrote").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = loads(line, f"{path} line {n}")  # nested too deeply: one line, never skipped
        except json.JSONDecodeError:
            if n == len(lines):
                break  # the line a killed run was writing
            raise SgeoError(f"{path} line {n} is not valid JSON; fix or delete that line") from None
        if not isinstance(record, dict):
            raise SgeoError(f"{path} line {n} is not a JSON object")
        records.append(record)
    return records


def read_scorable(path: Path) -> list[dict[str, Any]]:
    """`read_answers`, refused in one line when the file holds no record or a record lacks pred or gt."""
    records = read_answers(path)
    if not records:
        raise SgeoError(f"{path} holds no answers")
    for n, record in enumerate(records):
        if "pred" not in record or "gt" not in record:
            raise SgeoError(f"{path} record {n} (question_id {record.get('question_id')}) lacks pred or gt")
    return records


def unanswered_score(record: dict[str, Any]) -> dict[str, Any] | None:
    """The score of a record the eval could not answer (an unreadable image, too long): wrong, 0 credit;
    None for an answered one."""
    if record.get("skipped") or record.get("error"):
        return {"kind": "not answered", "success": False, "credit": 0.0}
    return None


def _drop_partial_line(path: Path) -> None:
    """Cut a last line without its newline (left by a killed writer) so the next record starts clean."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                f.truncate(start + newline + 1)
                return
            end = start
        f.truncate(0)


def append_answer(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line and flush it to the OS."""
    path = Path(path)
    if path.is_file():
        _drop_partial_line(path)
    line = json.dumps(record, ensure_ascii=False)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()


def rewrite_answers(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace `path` with `records`, one per line, atomically: a crash leaves the old file or the new one."""
    path = Path(path)
    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), fsync=True)
