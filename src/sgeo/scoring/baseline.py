"""The best constant answer: per category, one answer given to every question, chosen on a training split.

What a model must beat to show that it reads the image: an answer that ignores it. The choice is made on
`fit` items (questions about training images) and scored on `held_out` items, so the baseline never sees
the answers it is scored on. Candidates per category:

- predicates ("Is the A left of the B?"): "Yes." or "No.";
- choices ("Which is taller, the A or the B?"): the first or the second object the question names;
- quantities: the median of the category's training values (in metres);
- direction: the most common training hour.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from .direction import parse_clock
from .dispatch import score_item
from .qualitative import candidates_in, relation_of
from .quantities import parse_quantity
from .report import aggregate

Answer = Callable[[Any], str]  # BenchItem -> the constant policy's answer to it


def constant_baseline(fit: Iterable[Any], held_out: Iterable[Any]) -> dict[str, Any]:
    """Scores (the `aggregate` shape) of the best constant answer per category, fitted on `fit` and scored
    on `held_out` (both `BenchItem`s), plus `answers`: category -> the answer chosen."""
    fit_by, held_by = _by_category(fit), _by_category(held_out)
    records, answers = [], {}
    for category, items in held_by.items():
        fit_items = fit_by.get(category, [])  # none: the candidates' defaults, never the held-out answers
        policies = _candidates(category, items[0].qa_info.get("type"), fit_items)
        name = max(policies, key=lambda n: _successes(policies[n], fit_items))
        answers[category] = name
        records.extend(_scored(policies[name], items))
    return {**aggregate(records), "answers": answers}


def _by_category(items: Iterable[Any]) -> dict[str, list]:
    grouped: dict[str, list] = defaultdict(list)
    for item in items:
        grouped[item.qa_info["category"]].append(item)
    return grouped


def _scored(answer_of: Answer, items: list) -> list[dict]:
    records = []
    for item in items:
        record = item.to_record(answer_of(item))
        records.append({**record, **score_item(record)})
    return records


def _successes(answer_of: Answer, items: list) -> int:
    return sum(r["success"] for r in _scored(answer_of, items))


def _candidates(category: str, kind: str | None, fit: list) -> dict[str, Answer]:
    """The constant answers worth trying for `category` (of type `kind`); quantities and hours are read off
    `fit` alone."""
    if category == "direction":
        hours = Counter(h for i in fit if (h := parse_clock(i.gt)) is not None)
        hour = hours.most_common(1)[0][0] if hours else 12
        return {f"{hour} o'clock": lambda _: f"{hour} o'clock."}
    if kind == "quantitative":
        values = [v for i in fit if (v := parse_quantity(i.gt)) is not None]
        median = statistics.median(values) if values else 1.0
        return {f"{median:.2f} meters": lambda _: f"About {median:.2f} meters."}
    relation = relation_of(category)

    def nth(k: int) -> Answer:
        def answer(item) -> str:
            names = candidates_in(item.extra.get("question", item.prompt), relation)
            return f"The {names[k]}." if len(names) > k else ""

        return answer

    return {"yes": lambda _: "Yes.", "no": lambda _: "No.", "first object": nth(0), "second object": nth(1)}
