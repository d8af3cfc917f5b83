"""The score job: an answers.jsonl (written by the eval job as it goes) -> scores.json + scores.png.

answers.jsonl holds one JSON object per answered question: {"question_id", "pred", "gt", "qa_info", ...}
plus whatever the benchmark item carried (`question`, `options`, bbox, ...). A killed eval leaves at most a
truncated last line: readers skip it and `append_answer` cuts it off before writing, so a resumed run
answers that question again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.pipeline.benchmarks import check_bench
from sgeo.pipeline.scoring import Judge, aggregate, format_table, plot_scores, score_item


def read_answers(path: Path) -> list[dict[str, Any]]:
    """All records of an answers.jsonl; a truncated last line (a killed run) is skipped."""
    path = Path(path)
    if not path.is_file():
        raise SgeoError(f"answers file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break  # the line a killed run was writing
            raise SgeoError(f"{path} line {n} is not valid JSON; fix or delete that line") from None
        if not isinstance(record, dict):
            raise SgeoError(f"{path} line {n} is not a JSON object")
        records.append(record)
    return records


def answered_ids(path: Path) -> set[str]:
    """question_ids already in `path` (empty when it does not exist yet): what a resumed eval skips."""
    if not Path(path).is_file():
        return set()
    return {str(r["question_id"]) for r in read_answers(path) if "question_id" in r}


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


def score_answers(
    answers: Path, bench: str, out: Path | None = None, judge: Judge | None = None
) -> dict[str, Any]:
    """Score every record of `answers` and write scores.json, scores.png and scored.jsonl (each record with
    its verdict) to `out` (default: the answers file's folder). Returns {"scores", "table", "files"}.

    `bench` selects the scoring rules: "spatialscore" treats records without a type as multiple choice;
    the SpatialRGPT-style benches dispatch on qa_info type and category.
    """
    check_bench(bench)
    answers = Path(answers)
    out = Path(out) if out is not None else answers.parent
    records = read_answers(answers)
    if not records:
        raise SgeoError(f"{answers} holds no answers")
    scored = []
    for n, record in enumerate(records):
        if "pred" not in record or "gt" not in record:
            raise SgeoError(
                f"{answers} record {n} (question_id {record.get('question_id')}) lacks pred or gt"
            )
        if bench == "spatialscore":
            info = record.setdefault("qa_info", {})
            info.setdefault("type", "multi-choice")
        scored.append({**record, **score_item(record, judge=judge)})
    scores = aggregate(scored)
    table = format_table(scores)
    out.mkdir(parents=True, exist_ok=True)
    files = {"scores": out / "scores.json", "plot": out / "scores.png", "scored": out / "scored.jsonl"}
    files["scores"].write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
    with open(files["scored"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in scored)
    plot_scores(scores, files["plot"])
    return {"scores": scores, "table": table, "files": {k: str(v) for k, v in files.items()}}
