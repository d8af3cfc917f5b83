"""3DSRBench's scoring, as the standard harness does it (lmms-eval `tasks/3dsrbench/utils.py`, which follows
VLMEvalKit's format, the one the authors publish their circular file in).

- An answer's letter (`extract_answer`): the first of these patterns that matches, in order: a leading
  "A." / "A)" / "A ", the letter alone, "Answer: A", "The answer is A", "My answer is A", "(A)", "A.", and any
  standalone A-D (case-sensitive; so "A cat" reads A). Correct iff it is the answer letter.
- vanilla accuracy: over all items. With the circular file's qids ("VIN6MS3J", "VIN6MS3J-1", "VIN6MS3J-flip",
  "VIN6MS3J-flip-1"): flip accuracy (a question and its flipped version both right: qid without "-flip"),
  circular accuracy (all circular variants right: the 8-character base, "-flip" kept apart) and flip+circular
  (every variant of the base right). Per main category (height, location, orientation, multi_object) and per
  detailed category.

The authors' own form (`3dsrbench_v1_vlmevalkit_circular.tsv`, ccvl/3DSRBench on the Hub) is scored as they
do: each row by VLMEvalKit's exact matching (`vlmevalkit.exact_matching`; their results are VLMEvalKit's
per-row `hit`), then their `compute_3drbench_results_circular.py`: a qid ending in "-<digit>" belongs to the
qid without it (so "VIN6MS3J-1" to "VIN6MS3J", "VIN6MS3J-flip-1" to "VIN6MS3J-flip": a flipped question is a
question of its own), a group is right iff all its rows are, and the figures are the mean over groups:
overall, per main category (height, location, orientation, multi_object) and per detailed category.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .vlmevalkit import exact_matching

CATEGORY_MAPPING = {
    "height_higher": "height",
    "location_above": "location",
    "location_closer_to_camera": "location",
    "location_next_to": "location",
    "orientation_in_front_of": "orientation",
    "orientation_on_the_left": "orientation",
    "orientation_viewpoint": "orientation",
    "multi_object_closer_to": "multi_object",
    "multi_object_facing": "multi_object",
    "multi_object_viewpoint_towards_object": "multi_object",
    "multi_object_parallel": "multi_object",
    "multi_object_same_direction": "multi_object",
}
_PATTERNS = (
    r"^([A-D])[\.\s\)]",
    r"^([A-D])$",
    r"[Aa]nswer[:\s]+([A-D])",
    r"[Tt]he answer is[:\s]+([A-D])",
    r"[Mm]y answer is[:\s]+([A-D])",
    r"\(([A-D])\)",
    r"([A-D])\.",
    r"\b([A-D])\b",
)


def threedsr_letter(text: str) -> str | None:
    """lmms-eval's `extract_answer`: the answer letter A-D, or None."""
    text = str(text).strip()
    if not text:
        return None
    for pattern in _PATTERNS:
        if m := re.search(pattern, text):
            return m.group(1).upper()
    return None


AUTHORS_FORM = "3dsrbench-tsv"  # BenchItem.extra["form"] of an item read from the authors' TSV
MAIN_CATEGORIES = ("height", "location", "orientation", "multi_object")  # the order of their table


def score_threedsr(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("form") == AUTHORS_FORM:
        return _score_authors(record)
    pred = threedsr_letter(str(record.get("pred") or ""))
    gt = str(record.get("gt", ""))
    return {"kind": "multi-choice", "success": pred == gt, "pred_letter": pred, "gt_letter": gt}


def _score_authors(record: dict[str, Any]) -> dict[str, Any]:
    choices = record.get("choices") or dict(zip("ABCD", record.get("options") or [], strict=False))
    pred = exact_matching(str(record.get("pred") or ""), choices)
    gt = str(record.get("gt", ""))
    return {"kind": "multi-choice", "success": pred == gt, "pred_letter": pred, "gt_letter": gt}


def circular_group(qid: str) -> str:
    """The authors' script: `qid = row[1][:-2] if row[1][-2] == '-' else row[1]`."""
    return qid[:-2] if len(qid) >= 2 and qid[-2] == "-" else qid


def _authors_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[Any]] = {}
    for r in records:
        key = circular_group(str(r.get("qid")))
        hit = int(bool(r.get("success")))
        if key in groups:
            groups[key][0] *= hit
        else:  # the group's category is its first row's, as theirs
            groups[key] = [hit, str((r.get("qa_info") or {}).get("category"))]

    headline: dict[str, float] = {}

    def put(name: str, hits: list[int]) -> None:
        if hits:  # a category without questions (a subset of the file) has no figure, not 0
            headline[name] = sum(hits) / len(hits)

    put("circular accuracy (authors' overall)", [g[0] for g in groups.values()])
    for main in MAIN_CATEGORIES:
        subs = [c for c, m in CATEGORY_MAPPING.items() if m == main]
        put(f"{main} (circular)", [g[0] for g in groups.values() if g[1] in subs])
    for sub in CATEGORY_MAPPING:
        put(f"{sub} (circular)", [g[0] for g in groups.values() if g[1] == sub])
    return {"headline": headline, "groups": len(groups)}


def _grouped(records: list[dict[str, Any]], key: Callable[[str], str]) -> float:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        groups[key(str(r.get("qid")))].append(bool(r.get("success")))
    return sum(all(g) for g in groups.values()) / len(groups) if groups else 0.0


def threedsr_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    if records and all(r.get("form") == AUTHORS_FORM for r in records):
        return _authors_summary(records)
    n = len(records)
    headline = {"vanilla accuracy": sum(bool(r.get("success")) for r in records) / n if n else 0.0}
    if records and all(r.get("qid") for r in records):  # the circular file
        headline["flip accuracy"] = _grouped(records, lambda q: q.replace("-flip", ""))
        headline["circular accuracy"] = _grouped(records, lambda q: q[:13] if "-flip" in q else q[:8])
        headline["flip + circular accuracy"] = _grouped(records, lambda q: q[:8])
    return {"headline": headline}  # per main and detailed category: the table's by_type, by_category
