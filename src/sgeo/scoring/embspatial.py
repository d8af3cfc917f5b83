"""EmbSpatial-Bench's scoring, as the standard harness does it (lmms-eval `tasks/embspatial/utils.py`; the authors
publish no evaluation code): the answer's letter as `_extract_answer_letter` reads it (`cvbench.lmms_eval_letter`)
against "ABCD"[answer]; accuracy over all items (`embspatial_acc`), per relation and per data source
(ai2thor, mp3d, scannet)."""

from __future__ import annotations

from typing import Any

from .cvbench import lmms_eval_letter


def score_embspatial(record: dict[str, Any]) -> dict[str, Any]:
    pred = lmms_eval_letter(str(record.get("pred") or ""))
    gt = str(record.get("gt", ""))
    return {"kind": "multi-choice", "success": pred == gt, "pred_letter": pred, "gt_letter": gt}


def embspatial_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """`embspatial_aggregate_results`: the item accuracy (per relation and source: the table's breakdown)."""
    n = len(records)
    return {
        "headline": {"EmbSpatial accuracy": sum(bool(r.get("success")) for r in records) / n if n else 0.0}
    }
