"""POPE's scoring, as LLaVA's `llava/eval/eval_pope.py` (the same rules as POPE's own evaluate.py) does it.

- An answer's label: only its first sentence (the text before the first "."), commas removed, split on
  single spaces; "no" if one of the words is "No", "not" or "no", else "yes". Its quirks are kept: "No."
  and "Not at all" read no, "Nope" and "NO" read yes, an empty answer reads yes.
- Per category (random, popular, adversarial): TP / FP / TN / FN with "yes" positive, accuracy, precision,
  recall, F1 and the yes-ratio (the share of "yes" predictions). Their script divides by zero when a
  category has no "yes" prediction or no "yes" label; here that figure is 0 and the summary says so.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def pope_label(text: str) -> str:
    """eval_pope.py's reading of an answer: "yes" or "no"."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    text = text.replace(",", "")
    words = text.split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def score_pope(record: dict[str, Any]) -> dict[str, Any]:
    """One answer: {"kind", "success", "pred_label"} against the item's label (gt "yes" / "no")."""
    label = pope_label(str(record.get("pred") or ""))
    return {
        "kind": "yes/no",
        "success": label == str(record.get("gt", "")).strip().lower(),
        "pred_label": label,
    }


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def pope_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """eval_pope.py `eval_pope` over one category's scored records."""
    tp = fp = tn = fn = 0
    for r in records:
        # an unanswered item has no label: theirs reads its "" as yes
        pred_yes = r.get("pred_label", "yes") == "yes"
        label_yes = str(r.get("gt", "")).strip().lower() != "no"  # theirs: anything but "no" is positive
        tp += pred_yes and label_yes
        fp += pred_yes and not label_yes
        tn += not pred_yes and not label_yes
        fn += not pred_yes and label_yes
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "F1": _ratio(2 * precision * recall, precision + recall),
        "yes-ratio": _ratio(tp + fp, len(records)),
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
    }


def pope_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each category's eval_pope.py figures, and their means over the categories (LLaVA-1.5 reports F1)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[str((r.get("qa_info") or {}).get("category", "unknown"))].append(r)
    table = {category: pope_metrics(members) for category, members in sorted(groups.items())}
    headline = {
        f"{metric} (mean over {', '.join(table)})": sum(m[metric] for m in table.values()) / len(table)
        for metric in ("F1", "accuracy")
    }
    out: dict[str, Any] = {"headline": headline, "tables": {"by category": table}}
    undefined = [c for c, m in table.items() if m["TP"] + m["FP"] == 0 or m["TP"] + m["FN"] == 0]
    if undefined:
        out["note"] = (
            f"{', '.join(undefined)}: no 'yes' prediction or no 'yes' label, so precision or recall divides "
            "by zero (eval_pope.py stops there); shown as 0"
        )
    return out
