"""CV-Bench's scoring, as the standard harness does it (lmms-eval `tasks/cv_bench/utils.py`; the authors publish
the accuracy formula on the dataset card and no answer parser of their own).

- An answer's letter: `_extract_answer_letter`, re.match(r"[\\(\\s]*([A-Z])[\\)\\.\\s]*", text, IGNORECASE) on
  the stripped text: the first letter of the answer, after any "(" or spaces ("B", "(B)", "B. text", "b"),
  and "" when it starts otherwise. Its quirk is kept: an answer that is a sentence reads as its first
  letter ("The answer is B" -> "T"), a digit reads as nothing.
- Correct iff that letter is the answer with its parentheses stripped ("(C)" -> "C").
- CV-Bench accuracy (`cv_bench_default_aggregate_results`, "original formula"): the mean of the 2D sources'
  accuracies (ADE20K, COCO) averaged with the 3D one (Omni3D): ((ADE20K + COCO) / 2 + Omni3D) / 2.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

_LETTER = re.compile(r"[\(\s]*([A-Z])[\)\.\s]*", re.IGNORECASE)


def lmms_eval_letter(text: str) -> str:
    """lmms-eval's `_extract_answer_letter` (cv_bench, blink, embspatial): the letter an answer starts with."""
    m = _LETTER.match(str(text).strip())
    return m.group(1).upper() if m else ""


def score_cvbench(record: dict[str, Any]) -> dict[str, Any]:
    """One answer: {"kind", "success", "pred_letter", "gt_letter"}."""
    pred = lmms_eval_letter(str(record.get("pred") or ""))
    gt = str(record.get("gt", "")).strip("()")
    return {"kind": "multi-choice", "success": pred == gt, "pred_letter": pred, "gt_letter": gt}


def source_accuracies(records: list[dict[str, Any]], field: str = "source") -> dict[str, float]:
    """Accuracy per value of qa_info[field], over the scored records."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        groups[str((r.get("qa_info") or {}).get(field, "unknown"))].append(bool(r.get("success")))
    return {name: sum(hits) / len(hits) for name, hits in sorted(groups.items())}


def cvbench_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The card's figures: CV-Bench accuracy, 2D (ADE20K and COCO averaged), 3D (Omni3D). A figure whose
    sources are not all in the run (e.g. --limit) is left out, and the note says which source is missing."""
    acc = source_accuracies(records)
    headline: dict[str, float] = {}
    missing = [s for s in ("ADE20K", "COCO", "Omni3D") if s not in acc]
    if "ADE20K" in acc and "COCO" in acc:
        headline["2D accuracy ((ADE20K + COCO) / 2)"] = (acc["ADE20K"] + acc["COCO"]) / 2
    if "Omni3D" in acc:
        headline["3D accuracy (Omni3D)"] = acc["Omni3D"]
    if not missing:
        headline["CV-Bench accuracy"] = ((acc["ADE20K"] + acc["COCO"]) / 2 + acc["Omni3D"]) / 2
    out: dict[str, Any] = {"headline": headline}  # per source and task: the table's by_source, by_category
    if missing:
        out["note"] = f"no items from {', '.join(missing)}: CV-Bench's formula needs all three sources"
    return out
