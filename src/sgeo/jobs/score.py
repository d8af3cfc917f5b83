"""The score job: an answers.jsonl (written by the eval job as it goes; its format: `pipeline.answers`) ->
scores.json + scores.png, and `--compare`: scored runs side by side.

Scoring uses the benchmark's rules (its record's `scorer`) or, given a judge where the benchmark has one, asks
it as the benchmark's authors do; the judge's verdicts are written back into the answers file (replaced whole,
never half-written), so rescoring asks only for what it has not seen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgeo.benchmarks import REGISTRY, get_benchmark
from sgeo.errors import SgeoError
from sgeo.pipeline.answers import ANSWERS_FILE, read_scorable, rewrite_answers, unanswered_score
from sgeo.scoring import ChatJudge, JudgeError, aggregate, format_table, plot_scores

SAVE_EVERY = 20  # judge verdicts between two rewrites of the answers file
SCORES_FILE = "scores.json"  # a scored run's figures (`aggregate`, with the benchmark's own summary)
SCORE_INFO = "score_info.json"  # beside scores.json: the benchmark scored and the models that answered
SUITE_FILE = "suite.json"  # a suite's figures, one entry per benchmark (written by `suite.run_suite`)


def check_judge(bench: str, judge: object | None) -> None:
    """Refuse, in one line and before any work, a judge for a benchmark scored by rules only, and no judge
    for one that only a judge can score."""
    record = get_benchmark(bench)
    if judge is not None and record.judge is None:
        with_judge = ", ".join(name for name, b in REGISTRY.items() if b.judge is not None)
        raise SgeoError(
            f"--judge does not apply to {bench}: {record.title}'s own scoring uses rules only "
            f"(benchmarks with a judge: {with_judge})"
        )
    if judge is None and record.judge_required:
        raise SgeoError(
            f"{record.title} is scored by a judge only, as its authors do; pass --judge URL "
            "(an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1)"
        )


def score_answers(
    answers: Path, bench: str, out: Path | None = None, judge: ChatJudge | None = None
) -> dict[str, Any]:
    """Score every record of `answers` and write scores.json, scores.png and scored.jsonl (each record with
    its verdict) to `out` (default: the answers file's folder). Returns {"scores", "table", "files"}.

    `bench` selects the rules (its record's scorer) and adds the benchmark's own summary figures (its
    record's `summary`: CV-Bench's formula, POPE's F1, ...) under "benchmark". `judge`, for a benchmark that
    has one, asks what the authors' script sends to their judge; an unreachable endpoint stops with a
    one-line error after the verdicts so far are saved.
    """
    check_judge(bench, judge)
    benchmark = get_benchmark(bench)
    answers = Path(answers)
    out = Path(out) if out is not None else answers.parent
    records = read_scorable(answers)
    scored, unsaved = [], 0
    try:
        for record in records:
            result = unanswered_score(record)
            if result is None and judge is not None:
                judged = benchmark.judge(record, judge)  # may add the verdict to `record`
                if judged is not None:
                    result, asked = judged
                    unsaved += asked
                    if unsaved >= SAVE_EVERY:
                        rewrite_answers(answers, records)
                        unsaved = 0
            if result is None:
                result = benchmark.scorer(record)
            scored.append({**record, **result})
    except JudgeError:
        if unsaved:
            rewrite_answers(answers, records)
        raise
    if unsaved:
        rewrite_answers(answers, records)
    scores = aggregate(scored)
    if benchmark.summary is not None:
        scores["benchmark"] = {"name": bench, "title": benchmark.title, **benchmark.summary(scored)}
    if judge is not None:
        scores["judge"] = {
            "endpoint": judge.base,
            "requests": judge.calls,
            "reference_format_fails": sum(bool(r.get("reference_format_fails")) for r in scored),
        }
    table = format_table(scores)
    out.mkdir(parents=True, exist_ok=True)
    files = {"scores": out / SCORES_FILE, "plot": out / "scores.png", "scored": out / "scored.jsonl",
             "info": out / SCORE_INFO}  # fmt: skip
    files["scores"].write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
    # what `sgeo score --compare` needs beside the figures: the benchmark and who answered
    models = list(dict.fromkeys(str(r["model_name"]) for r in records if r.get("model_name")))
    info = {"bench": bench, "title": benchmark.title, "answers": str(answers), "model_names": models}
    files["info"].write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    with open(files["scored"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in scored)
    plot_scores(scores, files["plot"])
    return {"scores": scores, "table": table, "files": {k: str(v) for k, v in files.items()}}


def run_score(
    answers: Path,
    bench: str,
    out: Path | None = None,
    judge: str | None = None,
    judge_model: str | None = None,
) -> dict[str, Any]:
    """`sgeo score`: `score_answers` with the judge, if any, at endpoint URL `judge`."""
    return score_answers(answers, bench, out, judge=ChatJudge(judge, judge_model) if judge else None)


def read_run(run: Path) -> dict[str, Any]:
    """One run folder for `--compare`: {"path", "benchmarks": {name: scores}, "models": [model names]}.

    A folder of `sgeo eval` (scores.json + score_info.json) holds one benchmark; a suite's (suite.json) one
    per benchmark, each in its <name>/ folder."""
    from ..pipeline.json_files import read_json

    run = Path(run)
    if run.is_file() and run.name in (SCORES_FILE, SUITE_FILE):
        run = run.parent
    if not run.is_dir():
        raise SgeoError(f"run folder not found: {run}; pass the --out folders of sgeo eval")
    if (run / SUITE_FILE).is_file():
        suite = read_json(run / SUITE_FILE)
        models: list[str] = []
        for name in suite:
            info = run / name / SCORE_INFO
            if info.is_file():
                models += read_json(info).get("model_names") or []
        return {"path": str(run), "benchmarks": _checked(suite, run / SUITE_FILE),
                "models": list(dict.fromkeys(models))}  # fmt: skip
    if not (run / SCORES_FILE).is_file():
        raise SgeoError(
            f"{run} holds no scores.json or suite.json; pass folders that sgeo eval or sgeo score wrote"
        )
    scores = read_json(run / SCORES_FILE)
    scores = scores if isinstance(scores, dict) else {}  # refused by _checked, naming the file
    info = read_json(run / SCORE_INFO) if (run / SCORE_INFO).is_file() else {}
    info = info if isinstance(info, dict) else {}
    bench = info.get("bench") or (scores.get("benchmark") or {}).get("name")
    if not isinstance(bench, str) or not bench:
        raise SgeoError(
            f"{run} does not say which benchmark it scored (scored by an older sgeo); rescore it: "
            f"sgeo score {run / ANSWERS_FILE} --bench NAME"
        )
    return {"path": str(run), "benchmarks": _checked({bench: scores}, run / SCORES_FILE),
            "models": info.get("model_names") or []}  # fmt: skip


def _checked(benchmarks: Any, path: Path) -> dict[str, Any]:
    """{benchmark: scores}, each with its "overall" figures, or one line naming the file."""
    if not isinstance(benchmarks, dict) or not all(
        isinstance(s, dict) and isinstance(s.get("overall"), dict) and "score" in s["overall"]
        for s in benchmarks.values()
    ):
        raise SgeoError(f"{path} is not the scores sgeo writes; rescore the run with sgeo score")
    return benchmarks


def run_compare(runs: list[Path], out: Path | None = None, published: bool = False) -> dict[str, Any]:
    """`sgeo score --compare RUN...`: the runs' figures side by side (and, with `published`, the published
    figures of reference models with their sources) -> the table, OUT/compare.json, OUT/compare.png."""
    from sgeo.scoring.compare import compare_rows, compare_table, plot_compare

    if len(runs) < 1:
        raise SgeoError("--compare needs run folders: sgeo score --compare RUN_DIR RUN_DIR ...")
    loaded = [read_run(run) for run in runs]
    benches = [sorted(run["benchmarks"]) for run in loaded]
    if any(b != benches[0] for b in benches):
        which = "; ".join(f"{run['path']}: {', '.join(b)}" for run, b in zip(loaded, benches, strict=True))
        raise SgeoError(
            f"the runs scored different benchmarks ({which}); compare runs of the same benchmarks"
        )
    labels = _labels([Path(run["path"]) for run in loaded])
    columns = {label: run["benchmarks"] for label, run in zip(labels, loaded, strict=True)}
    references = []
    if published:
        from sgeo.benchmarks.published_figures import published_for

        references = published_for(benches[0])
        if not references:
            from sgeo.benchmarks.published_figures import PUBLISHED

            known = sorted({figure.bench for figure in PUBLISHED})
            raise SgeoError(
                f"no published figures recorded for {', '.join(benches[0])}; sgeo has some for {', '.join(known)}"
            )
    rows = compare_rows(columns, references)
    models = {label: run["models"] for label, run in zip(labels, loaded, strict=True)}
    table = compare_table(rows, list(columns), models, references)
    out = Path(out) if out is not None else Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "compare.txt", "scores": out / "compare.json", "plot": out / "compare.png"}
    files["table"].write_text(table + "\n", encoding="utf-8")
    sources = {f.source_key: {"model": f.model, "source": f.source} for f in references}
    runs_json = {
        label: {"path": run["path"], "models": run["models"]}
        for label, run in zip(labels, loaded, strict=True)
    }
    document = {"benchmarks": benches[0], "runs": runs_json, "rows": rows, "published_sources": sources}
    files["scores"].write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    plot_compare(rows, files["plot"])
    return {"table": table, "rows": rows, "files": {k: str(v) for k, v in files.items()}}


def _labels(paths: list[Path]) -> list[str]:
    """Each run's column name: its folder's name, or more of its path where two names are the same."""
    for depth in range(1, 64):
        labels = ["/".join(p.resolve().parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]  # the same folder twice: shown twice
