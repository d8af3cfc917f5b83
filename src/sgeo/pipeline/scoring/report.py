"""The summary of a scored run: per-type and per-category scores, a text table and a bar chart."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .qualitative import relation_of

# The reference's report groups (evaluate_spatial_with_gpt4.py).
_GROUPS = {
    rel: group
    for group in ("left/right", "below/above", "behind/front", "tall/short", "big/small", "wide/thin")
    for rel in group.split("/")
}
_QUANT_GROUPS = {
    "distance_data": "direct_distance",
    "horizontal_distance_data": "horizontal_distance",
    "vertical_distance_data": "vertical_distance",
    "width_data": "width",
    "height_data": "height",
    "direction": "direction",
}


def report_group(category: str) -> str | None:
    """The reference's report group of a SpatialRGPT-Bench category ("left_choice" -> "left/right")."""
    rel = relation_of(category)
    return _GROUPS[rel] if rel else _QUANT_GROUPS.get(category)


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    correct = sum(bool(r.get("success")) for r in records)
    s: dict[str, Any] = {"n": n, "score": correct / n if n else 0.0, "correct": correct}
    for key, name in (("rel_error", "mean_rel_error"), ("error_hours", "mean_error_hours")):
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            s[name] = sum(values) / len(values)
    unread = sum(
        (r.get("kind") == "quantitative" and r.get("pred_m") is None)
        or (r.get("kind") == "direction" and r.get("pred_hour") is None)
        for r in records
    )
    if unread:
        s["unparsed"] = unread
    return s


def aggregate(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """{"by_type": {type: summary}, "by_category": {category: summary}, "overall": summary}.

    A summary is {"n", "score" (success rate / accuracy in [0, 1]), "correct"} plus, where they apply,
    "mean_rel_error" and "mean_error_hours" (over readable predictions, as the reference), "unparsed" and,
    per category, the reference's report "group". Records need "success" and "qa_info".
    """
    records = list(records)
    by: dict[str, dict[str, list[dict[str, Any]]]] = {
        "by_type": defaultdict(list),
        "by_category": defaultdict(list),
    }
    for r in records:
        info = r.get("qa_info") or {}
        by["by_type"][str(info.get("type", "unknown"))].append(r)
        by["by_category"][str(info.get("category", "unknown"))].append(r)
    out: dict[str, Any] = {key: {k: _summary(v) for k, v in sorted(by[key].items())} for key in by}
    for category, s in out["by_category"].items():
        if group := report_group(category):
            s["group"] = group
    out["overall"] = _summary(records)
    return out


def format_table(scores: dict[str, Any]) -> str:
    """Aligned text: overall, each type, each category; score in %."""
    rows = [("", "n", "score %", "rel err", "group")]

    def row(name: str, s: dict[str, Any]) -> tuple[str, ...]:
        err = s.get("mean_rel_error")
        return (
            name,
            str(s["n"]),
            f"{100 * s['score']:.1f}",
            "" if err is None else f"{err:.3f}",
            s.get("group", ""),
        )

    rows.append(row("overall", scores["overall"]))
    for title in ("by_type", "by_category"):
        rows.append((f"{title.replace('_', ' ')}:", "", "", "", ""))
        rows.extend(row(f"  {name}", s) for name, s in scores.get(title, {}).items())
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:4], widths[1:4], strict=True)), r[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def plot_scores(scores: dict[str, Any], path: Path) -> Path:
    """Bar chart of the score of each category (n above each bar) to a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only the plot needs matplotlib
    from matplotlib.figure import Figure

    cats = scores.get("by_category", {})
    names = list(cats)
    fig = Figure(figsize=(max(4.0, 0.45 * len(names) + 2.0), 4.0), layout="constrained")
    FigureCanvasAgg(fig)  # an Agg canvas without touching pyplot's global backend
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), [100 * cats[n]["score"] for n in names], color="#4878a8")
    ax.bar_label(bars, labels=[str(cats[n]["n"]) for n in names], fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("score (%)")
    overall = scores.get("overall", {"score": 0.0, "n": 0})
    ax.set_title(f"overall {100 * overall['score']:.1f}% of {overall['n']} (n above bars)", fontsize=10)
    fig.savefig(Path(path), dpi=120)
    return Path(path)
