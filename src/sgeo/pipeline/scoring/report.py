"""The summary of a scored run: scores per type, category (and subcategory, source), a text table, bar charts."""

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


def _figure(value: Any, name: str = "") -> str:
    """A summary figure: a fraction as a percentage; a count, or points (a name with "score" or "points":
    MME's sums of percentages), as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    points = "score" in name.lower() or "points" in name.lower()
    return f"{value:.2f}" if points or not 0.0 <= value <= 1.0 else f"{100 * value:.1f}"


def format_summary(summary: dict[str, Any] | None) -> list[str]:
    """The benchmark's own figures (its record's `summary`), as its authors report them: the headline
    figures, then each table of per-group metrics; fractions in %."""
    if not summary:
        return []
    lines = [f"{summary.get('title', summary.get('name', 'benchmark'))} (as its authors report it):"]
    headline = summary.get("headline") or {}
    width = max((len(k) for k in headline), default=0)
    lines.extend(f"  {name.ljust(width)}  {_figure(value, name)}" for name, value in headline.items())
    for title, table in (summary.get("tables") or {}).items():
        columns = list(dict.fromkeys(c for row in table.values() for c in row))  # in first-seen order
        rows = [(f"  {title}", *columns)] + [
            (f"    {name}", *(_figure(row.get(c, ""), c) for c in columns)) for name, row in table.items()
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]
            lines.append("  ".join(cells).rstrip())
    if note := summary.get("note"):
        lines.append(f"  note: {note}")
    return lines


def comparison_table(columns: dict[str, dict[str, Any]], answers: dict[str, str] | None = None) -> str:
    """Several runs' scores side by side (%): overall, each type, each category; `answers` adds a last
    column (a constant baseline's answer per category)."""
    names = list(columns)
    runs = list(columns.values())
    header = ("", "n", *names, "answer" if answers else "")
    rows = [header]

    def row(label: str, part: str | None, key: str | None) -> tuple[str, ...]:
        cells = [s["overall"] if part is None else s.get(part, {}).get(key, {}) for s in runs]
        n = next((c["n"] for c in cells if "n" in c), 0)
        pct = [f"{100 * c['score']:.1f}" if "score" in c else "" for c in cells]
        answer = (answers or {}).get(key, "") if part == "by_category" else ""
        return (label, str(n), *pct, answer)

    rows.append(row("overall", None, None))
    for part, title in (("by_type", None), ("by_category", "[category]")):
        keys = sorted({k for s in runs for k in s.get(part, {})})
        if title:
            rows.append((title, *[""] * (len(header) - 1)))
        rows.extend(row(f"  {k}", part, k) for k in keys)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for r in rows:
        numbers = [c.rjust(w) for c, w in zip(r[1:-1], widths[1:-1], strict=True)]
        lines.append("  ".join([r[0].ljust(widths[0]), *numbers, r[-1]]).rstrip())
    return "\n".join(lines)


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


def suite_rows(runs: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(benchmark, figure, value) rows for several benchmarks' scores: the items scored and the mean score,
    then each benchmark's own headline figures (fractions in %, points as they are)."""
    rows = []
    for name, scores in runs.items():
        overall = scores["overall"]
        rows.append((name, "items", str(overall["n"])))
        rows.append((name, "mean item score %", f"{100 * overall['score']:.1f}"))
        for figure, value in ((scores.get("benchmark") or {}).get("headline") or {}).items():
            rows.append((name, figure, _figure(value, figure)))
    return rows


def suite_table(runs: dict[str, dict[str, Any]]) -> str:
    """One table for several benchmarks (`sgeo eval --bench a,b,c`)."""
    rows = [("benchmark", "figure", "value"), *suite_rows(runs)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"{r[0].ljust(widths[0])}  {r[1].ljust(widths[1])}  {r[2].rjust(widths[2])}" for r in rows
    )


def plot_suite(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """One bar per benchmark: its mean item score in %, n above the bar (each benchmark's own figures are in
    the table and in its folder's scores.png)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(runs)
    fig = Figure(figsize=(max(4.0, 0.8 * len(names) + 2.0), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(range(len(names)), [100 * runs[n]["overall"]["score"] for n in names], color="#4878a8")
    ax.bar_label(bars, labels=[str(runs[n]["overall"]["n"]) for n in names], fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=9)
    ax.set_ylim(0, 105)
    ax.set_ylabel("mean item score (%)")
    ax.set_title("sgeo eval: one bar per benchmark (n above bars)", fontsize=10)
    fig.savefig(Path(path), dpi=120)
    return Path(path)


def _unit(name: str, value: Any) -> tuple[str, float]:
    """(unit, number) of a benchmark's own figure, by `_figure`'s rule: "n" (a count), "points" (as it is),
    or "%" (a fraction, times 100)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "n", float(value)
    points = "score" in name.lower() or "points" in name.lower()
    if points or not 0.0 <= float(value) <= 1.0:
        return "points", float(value)
    return "%", 100.0 * float(value)


def _group_rows(scores: dict[str, Any]) -> dict[str, float]:
    """The reference's report groups (SpatialRGPT-Bench's "left/right", ...) as % of their items: the
    categories of one group pooled, as the papers' tables report them."""
    pooled: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for s in scores.get("by_category", {}).values():
        if group := s.get("group"):
            pooled[group][0] += s["score"] * s["n"]
            pooled[group][1] += s["n"]
    return {group: 100.0 * credit / n for group, (credit, n) in sorted(pooled.items()) if n}


def compare_rows(columns: dict[str, dict[str, dict[str, Any]]], published: list | None = None) -> list[dict]:
    """Rows of several runs' figures: {"bench", "figure", "unit" ("%", "n", "points"), "values": {column:
    number or None}}. `columns` maps a run's label to its {benchmark: scores}; per benchmark: items, mean item
    score, the benchmark's own headline figures, report groups, each type and category. `published`
    (`published_figures.PublishedFigure`s) adds a column per reference model, on the row of the same figure
    (a row of its own where the runs have none)."""
    labels = list(columns)
    table: dict[tuple[str, str], dict] = {}

    def put(bench: str, figure: str, unit: str, label: str, value: float | None) -> None:
        row = table.setdefault(
            (bench, figure), {"bench": bench, "figure": figure, "unit": unit, "values": {}}
        )
        row["values"][label] = value

    for label, benches in columns.items():
        for bench, scores in benches.items():
            overall = scores["overall"]
            put(bench, "items", "n", label, float(overall["n"]))
            put(bench, "mean item score", "%", label, 100.0 * overall["score"])
            for name, value in ((scores.get("benchmark") or {}).get("headline") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    unit, number = _unit(name, value)
                    put(bench, name, unit, label, number)
            for group, value in _group_rows(scores).items():
                put(bench, f"group {group}", "%", label, value)
            for part, word in (("by_type", "type"), ("by_category", "category")):
                for name, s in scores.get(part, {}).items():
                    put(bench, f"{word} {name}", "%", label, 100.0 * s["score"])
    for figure in published or []:
        key = (figure.bench, figure.figure)
        if key not in table:
            table[key] = {"bench": figure.bench, "figure": figure.figure, "unit": figure.unit, "values": {}}
        table[key]["values"][figure.column] = figure.value
    extra = list(dict.fromkeys(f.column for f in published or []))
    for row in table.values():  # every row names every column, None where it has no figure
        row["values"] = {c: row["values"].get(c) for c in [*labels, *extra]}
    return list(table.values())


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    return str(int(value)) if unit == "n" else f"{value:.2f}" if unit == "points" else f"{value:.1f}"


def compare_table(
    rows: list[dict],
    labels: list[str],
    models: dict[str, list[str]] | None = None,
    published: list | None = None,
) -> str:
    """Aligned text of `compare_rows`: one column per run (and per published reference), % to one decimal;
    the models that answered each run, and the source of each published figure, below."""
    columns = list(rows[0]["values"]) if rows else labels
    lines_rows = [("benchmark", "figure", *columns)]
    lines_rows += [
        (
            r["bench"],
            f"{r['figure']}{' %' if r['unit'] == '%' else ''}",
            *(_cell(v, r["unit"]) for v in r["values"].values()),
        )
        for r in rows
    ]
    widths = [max(len(r[i]) for r in lines_rows) for i in range(len(lines_rows[0]))]
    lines = [
        "  ".join(
            [
                r[0].ljust(widths[0]),
                r[1].ljust(widths[1]),
                *(c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)),
            ]
        ).rstrip()
        for r in lines_rows
    ]
    for label in labels:
        if (models or {}).get(label):
            lines.append(f"{label}: answered by {', '.join(models[label])}")
    for column, source in dict.fromkeys((f.column, f.source) for f in published or []):
        lines.append(f"{column}: {source}")
    return "\n".join(lines)


def plot_compare(rows: list[dict], path: Path) -> Path:
    """Grouped bars (%): for each benchmark, its mean item score and its own headline figures, one bar per run
    (and per published reference); the per-type and per-category figures are in the table."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in rows if r["unit"] == "%" and not r["figure"].startswith(("type ", "category "))]
    columns = list(rows[0]["values"]) if rows else []
    fig = Figure(
        figsize=(max(5.0, 0.35 * len(shown) * max(1, len(columns)) + 2.5), 4.5), layout="constrained"
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(columns))
    for k, column in enumerate(columns):
        heights = [r["values"].get(column) for r in shown]
        xs = [i + (k - (len(columns) - 1) / 2) * width for i in range(len(shown))]
        ax.bar(xs, [0.0 if h is None else h for h in heights], width, label=column)
    names = [f"{r['bench']}: {r['figure']}" for r in shown]
    ax.set_xticks(range(len(shown)), names, rotation=40, ha="right", fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.set_title("sgeo score --compare", fontsize=10)
    if columns:
        ax.legend(fontsize=7)
    fig.savefig(Path(path), dpi=120)
    return Path(path)
