"""Scoring one answer by sgeo's rules: pick the scorer a record needs and run it. Each benchmark names its own
scorer in its record (`benchmarks.REGISTRY`); this is SpatialRGPT-Bench's and the synthetic bench's."""

from __future__ import annotations

import math
import re
from typing import Any

from .choice import MULTIPLE_CHOICE_TYPES, score_multiple_choice
from .direction import score_direction
from .qualitative import score_qualitative
from .quantities import NUMBER_PATTERN, normalise_quantities, parse_number, parse_quantity, score_quantitative
from .text import answer_text


def kind_of(record: dict[str, Any]) -> str:
    """The scorer a record needs: choice_letter, direction, quantitative, judgment, open or qualitative."""
    info = record.get("qa_info") or {}
    qtype, category = str(info.get("type", "")).lower(), str(info.get("category", "")).lower()
    if qtype in MULTIPLE_CHOICE_TYPES or (record.get("options") and qtype not in ("judgment", "open-ended")):
        return "choice_letter"
    if category == "direction":  # type "quantitative" in SpatialRGPT-Bench
        return "direction"
    return {"quantitative": "quantitative", "judgment": "judgment", "open-ended": "open"}.get(
        qtype, "qualitative"
    )


def _score_open(pred: str, gt: str) -> dict[str, Any]:
    """SpatialScore open-ended: a length when the gt has a unit, else the same number, else the same text."""
    if parse_quantity(gt) is not None:
        return score_quantitative(pred, gt)
    p, g = (re.search(NUMBER_PATTERN, normalise_quantities(s)) for s in (pred, gt))
    if g is None:
        return {"success": answer_text(pred).rstrip(".") == answer_text(gt).rstrip(".")}
    return {"success": p is not None and math.isclose(parse_number(p.group()), parse_number(g.group()))}


def score_item(record: Any, pred: str | None = None) -> dict[str, Any]:
    """Score one answer by sgeo's rules: a record {"pred", "gt", "qa_info", "question"?, "options"?} or a
    `BenchItem` with `pred`. Returns at least {"kind", "success"}."""
    if not isinstance(record, dict):  # a BenchItem
        record = record.to_record(pred or "")
    pred = str(record.get("pred") or "") if pred is None else pred
    gt = str(record.get("gt", ""))
    question = str(record.get("question") or record.get("prompt") or "")
    kind = kind_of(record)
    if kind == "choice_letter":
        out = score_multiple_choice(pred, gt, record.get("options"))
    elif kind == "direction":
        out = score_direction(pred, gt)
    elif kind == "quantitative":
        out = score_quantitative(pred, gt)
    elif kind == "open":
        out = _score_open(pred, gt)
    else:
        category = None if kind == "judgment" else (record.get("qa_info") or {}).get("category")
        out = score_qualitative(pred, gt, category, question)
    return {"kind": kind, **out}
