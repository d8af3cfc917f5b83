"""The summary of a scored run: scores per type, category (and subcategory, source), a text table, bar charts,
and how a figure is shown (`figure_unit`, `format_figure`). Several runs side by side: `compare`."""

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
    # an item's credit: 1 or 0, or a partial one (SpatialScore's VSI-Bench counts)
    credit = sum(float(r["credit"]) if "credit" in r else float(bool(r.get("success"))) for r in records)
    s: dict[str, Any] = {"n": n, "score": credit / n if n else 0.0, "correct": correct}
    if credit != correct:
        s["score_sum"] = credit
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
    for key, name in (("skipped", "skipped"), ("error", "errors"), ("match_failed", "judge_match_failed")):
        if count := sum(bool(r.get(key)) for r in records):
            s[name] = count
    return s


# (summary key, qa_info field): by_type and by_category always; the others where the records have them
# (SpatialScore's tables are by category, subcategory and source).
GROUPS = (
    ("by_type", "type"),
    ("by_category", "category"),
    ("by_subcategory", "subcategory"),
    ("by_source", "source"),
)


def _group_name(info: dict[str, Any], field: str) -> str:
    if field == "subcategory":  # subcategory names repeat across categories ("Relative", ...)
        return f"{info.get('category', 'unknown')} / {info['subcategory']}"
    return str(info.get(field, "unknown"))


def aggregate(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """{"by_type": {type: summary}, "by_category": {...}, ["by_subcategory", "by_source",] "overall"}.

    A summary is {"n", "score" (mean credit: success rate / accuracy in [0, 1]), "correct"} plus, where they
    apply, "score_sum" (when partial credits make it differ from "correct"), "mean_rel_error" and
    "mean_error_hours" (over readable predictions, as the reference), "unparsed", "skipped", "errors" and,
    per category, the reference's report "group". Records need "success" (or "credit") and "qa_info".
    """
    records = list(records)
    infos = [r.get("qa_info") or {} for r in records]
    out: dict[str, Any] = {}
    for key, field in GROUPS:
        if key not in ("by_type", "by_category") and not any(field in info for info in infos):
            continue
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r, info in zip(records, infos, strict=True):
            if field in info or key in ("by_type", "by_category"):
                groups[_group_name(info, field)].append(r)
        out[key] = {name: _summary(members) for name, members in sorted(groups.items())}
    for category, s in out["by_category"].items():
        if group := report_group(category):
            s["group"] = group
    out["overall"] = _summary(records)
    return out


def format_table(scores: dict[str, Any]) -> str:
    """Aligned text: overall, then each group (type, category, subcategory, source); score in %."""
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
    for title, _ in GROUPS:
        if title in scores:
            rows.append((f"{title.replace('_', ' ')}:", "", "", "", ""))
            rows.extend(row(f"  {name}", s) for name, s in scores[title].items())
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:4], widths[1:4], strict=True)), r[4]]
        lines.append("  ".join(cells).rstrip())
    lines.extend(format_summary(scores.get("benchmark")))
    overall = scores["overall"]
    notes = [
        f"{overall[key]} {what}"
        for key, what in (
            ("skipped", "skipped (too long for the model; see 'skipped' in answers.jsonl)"),
            ("errors", "not answered (unreadable image; see 'error')"),
            ("judge_match_failed", "judge replies unreadable (counted wrong, as SpatialRGPT's script)"),
        )
        if overall.get(key)
    ]
    if notes:
        lines.append("note: " + "; ".join(notes) + "; all count as wrong answers")
    return "\n".join(lines)


def figure_unit(name: str, value: float) -> tuple[str, float]:
    """(unit, number) of a benchmark's own figure: "n" for a count (as it is), "points" for a figure whose
    name has "score" or "points" (MME's sums of percentages) or that is no fraction (as it is), else "%"
    (the fraction times 100)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "n", float(value)
    points = "score" in name.lower() or "points" in name.lower()
    if points or not 0.0 <= float(value) <= 1.0:
        return "points", float(value)
    return "%", 100.0 * float(value)


def format_number(number: float | None, unit: str) -> str:
    """A number of `figure_unit`'s unit as tables show it: a count whole, points to 2 decimals, % to 1."""
    if number is None:
        return ""
    return str(int(number)) if unit == "n" else f"{number:.2f}" if unit == "points" else f"{number:.1f}"


def format_figure(value: Any, name: str = "") -> str:
    """A summary figure as tables show it (`figure_unit`, `format_number`); a text as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    unit, number = figure_unit(name, value)
    return format_number(number, unit)


def format_summary(summary: dict[str, Any] | None) -> list[str]:
    """The benchmark's own figures (its record's `summary`), as its authors report them: the headline
    figures, then each table of per-group metrics; fractions in %."""
    if not summary:
        return []
    lines = [f"{summary.get('title', summary.get('name', 'benchmark'))} (as its authors report it):"]
    headline = summary.get("headline") or {}
    width = max((len(k) for k in headline), default=0)
    lines.extend(f"  {name.ljust(width)}  {format_figure(value, name)}" for name, value in headline.items())
    for title, table in (summary.get("tables") or {}).items():
        columns = list(dict.fromkeys(c for row in table.values() for c in row))  # in first-seen order
        rows = [(f"  {title}", *columns)] + [
            (f"    {name}", *(format_figure(row.get(c, ""), c) for c in columns))
            for name, row in table.items()
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]
            lines.append("  ".join(cells).rstrip())
    if note := summary.get("note"):
        lines.append(f"  note: {note}")
    return lines


def plot_scores(scores: dict[str, Any], path: Path) -> Path:
    """Bar charts to a PNG at `path`: one panel per group (category, and subcategory and source where the
    scores have them), the score of each bar in %, its n above it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only the plot needs matplotlib
    from matplotlib.figure import Figure

    panels = [key for key, _ in GROUPS if key != "by_type" and key in scores] or ["by_category"]
    longest = max((len(scores.get(key, {})) for key in panels), default=1)
    fig = Figure(figsize=(max(4.0, 0.45 * longest + 2.0), 4.0 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)  # an Agg canvas without touching pyplot's global backend
    overall = scores.get("overall", {"score": 0.0, "n": 0})
    for k, key in enumerate(panels):
        groups = scores.get(key, {})
        names = list(groups)
        ax = fig.add_subplot(len(panels), 1, k + 1)
        bars = ax.bar(range(len(names)), [100 * groups[n]["score"] for n in names], color="#4878a8")
        ax.bar_label(bars, labels=[str(groups[n]["n"]) for n in names], fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"score (%) {key.replace('_', ' ')}")
        if k == 0:
            ax.set_title(
                f"overall {100 * overall['score']:.1f}% of {overall['n']} (n above bars)", fontsize=10
            )
    fig.savefig(Path(path), dpi=120)
    return Path(path)
