"""MME's scoring, as its authors' eval_tool/calculation.py does it (the copy LLaVA and the SpatialGeo reference
run: llava/eval/MME/eval_tool/calculation.py).

- An answer's label (`parse_pred_ans`, on the lower-cased answer): "yes" / "no" when it is exactly that, else
  "yes" if "yes" is in its first four characters, else "no" if "no" is, else "other" (always wrong). Its
  quirks are kept: "Not sure" reads no, "Nope" no, "Yes." yes, "There is a dog" other.
- Per subtask: acc, the share of questions right; acc+ ("acc_plus"), the share of images whose two questions
  are both right; the subtask's score is (acc + acc+) x 100. Perception is the sum of its ten subtasks'
  scores (2000 at most), Cognition of its four (800).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

EVAL_TYPES = {
    "Perception": [
        "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
    ],
    "Cognition": ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"],
}  # fmt: skip


def mme_label(pred: str) -> str:
    """calculation.py `parse_pred_ans` of the lower-cased answer: "yes", "no" or "other"."""
    pred = pred.lower()
    if pred in ["yes", "no"]:
        return pred
    prefix = pred[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def score_mme(record: dict[str, Any]) -> dict[str, Any]:
    label = mme_label(str(record.get("pred") or ""))
    return {"kind": "yes/no", "success": label == str(record.get("gt", "")).lower(), "pred_label": label}


def mme_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """calculation.py `process_result`: acc, acc+ and score per subtask; Perception and Cognition totals."""
    by_task: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        task = str((r.get("qa_info") or {}).get("category", "unknown"))
        by_task[task][str(r.get("image"))].append(bool(r.get("success")))
    table: dict[str, dict[str, float]] = {}
    for task in [t for kind in EVAL_TYPES.values() for t in kind] + sorted(set(by_task) - _KNOWN):
        if task not in by_task:
            continue
        images = by_task[task]
        answers = [ok for oks in images.values() for ok in oks]
        acc = sum(answers) / len(answers)
        acc_plus = sum(all(oks) for oks in images.values()) / len(images)
        table[task] = {"acc": acc, "acc+": acc_plus, "score": (acc + acc_plus) * 100}
    headline = {
        f"{kind} score (sum of {len(tasks)} subtasks)": sum(table[t]["score"] for t in tasks if t in table)
        for kind, tasks in EVAL_TYPES.items()
        if any(t in table for t in tasks)
    }
    out: dict[str, Any] = {"headline": headline, "tables": {"by subtask": table}}
    missing = [t for tasks in EVAL_TYPES.values() for t in tasks if t not in table]
    if missing:
        out["note"] = f"no items of {', '.join(missing)}: the totals sum only the subtasks in this run"
    return out


_KNOWN = {t for tasks in EVAL_TYPES.values() for t in tasks}
