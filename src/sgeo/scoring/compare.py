"""Several runs side by side: the quickstart's table (`comparison_table`), a suite's benchmarks
(`suite_table`, `plot_suite`) and `sgeo score --compare`'s runs and published figures (`compare_rows`,
`compare_table`, `plot_compare`); each figure shown as a run's own report shows it
(`report.format_figure`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .report import figure_unit, format_figure, format_number


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


def suite_rows(runs: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(benchmark, figure, value) rows for several benchmarks' scores: the items scored and the mean score,
    then each benchmark's own headline figures (fractions in %, points as they are)."""
    rows = []
    for name, scores in runs.items():
        overall = scores["overall"]
        rows.append((name, "items", str(overall["n"])))
        rows.append((name, "mean item score %", f"{100 * overall['score']:.1f}"))
        for figure, value in ((scores.get("benchmark") or {}).get("headline") or {}).items():
            rows.append((name, figure, format_figure(value, figure)))
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


def group_rows(scores: dict[str, Any]) -> dict[str, float]:
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
                    unit, number = figure_unit(name, value)
                    put(bench, name, unit, label, number)
            for group, value in group_rows(scores).items():
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
            *(format_number(v, r["unit"]) for v in r["values"].values()),
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
