"""MM-Vet's scoring: its authors' GPT-4 grader (github.com/yuweihao/MM-Vet, mm-vet_evaluator.py), through --judge.

- The request: one user message, the grader prompt below (verbatim) + "\\n" + " | ".join([question, the
  ground truth with " <AND> " / " <OR> " spaced, the prediction, ""]); max_tokens 3, temperature 0 (their
  default grader model is gpt-4-0613: pass it as --judge-model).
- The reply's first space-separated word, read as a number in [0, 1], is the item's score. Otherwise the
  prompt gains "\\nPredict the correctness of the answer (digit): " and is asked again, the temperature
  starting at 0 and rising by 0.5 after each try; after five such tries the score is 0.0 (their `try_time > 5`).
- Scores: the mean x 100 overall ("total"), per capability (rec, ocr, know, gen, spat, math: over the items
  that need it) and per capability integration (the exact set an item needs). One run (their --num_run 1).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .judge import cache_key

GRADER_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""  # noqa: E501
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")


def grader_query(question: str, answer: str, pred: str) -> str:
    """mm-vet_evaluator.py's query for one item (without the retry suffix)."""
    truth = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return GRADER_PROMPT + "\n" + " | ".join([question, truth, pred, ""])


def read_grade(content: str) -> float | None:
    """The score in a grader reply: its first space-separated word as a number in [0, 1], else None."""
    try:
        score = float(content.split(" ")[0].strip())
    except ValueError:
        return None
    return score if 0.0 <= score <= 1.0 else None


def _graded(score: float) -> dict[str, Any]:
    return {"kind": "gpt-graded", "success": score == 1.0, "credit": score}


def score_mmvet(record: dict[str, Any]) -> dict[str, Any]:
    """A record's grade as the judge gave it (MM-Vet has no rules: `sgeo eval/score --bench mm-vet` needs --judge)."""
    grade = (record.get("judge") or {}).get("score")
    return _graded(float(grade)) if isinstance(grade, (int, float)) else {**_graded(0.0), "unjudged": True}


def mmvet_judge(record: dict[str, Any], judge) -> tuple[dict[str, Any], bool]:
    """The grade of one record by mm-vet_evaluator.py's loop; cached in record["judge"] by the first query."""
    query = grader_query(
        str(record.get("question", "")), str(record.get("gt", "")), str(record.get("pred") or "")
    )
    messages = [{"role": "user", "content": query}]
    cached = record.get("judge")
    if (
        isinstance(cached, dict)
        and "score" in cached
        and cached.get("key") == cache_key(str(cached.get("model")), messages)
        and judge.requested_model in (None, cached.get("model"))
    ):
        return _graded(float(cached["score"])), False
    model = judge.model
    content = judge.complete(messages, json_reply=False, temperature=0.0, max_tokens=3)
    score, tries, temperature = read_grade(content), 1, 0.0
    retry = [{"role": "user", "content": query + RETRY_SUFFIX}]
    while score is None and tries <= 5:
        content = judge.complete(retry, json_reply=False, temperature=temperature, max_tokens=3)
        tries += 1
        temperature += 0.5
        score = read_grade(content) if tries <= 5 else None  # their sixth reply is never read
    grade = 0.0 if score is None else score
    record["judge"] = {"model": model, "key": cache_key(model, messages), "reply": content, "score": grade}
    return _graded(grade), True


def mmvet_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """export_result: total, per capability and per capability integration, each the mean grade x 100."""
    caps: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for cap in str((r.get("qa_info") or {}).get("category", "")).split("_"):
            if cap:
                caps[cap].append(float(r.get("credit", 0.0)))
    n = len(records)
    total = sum(float(r.get("credit", 0.0)) for r in records) / n if n else 0.0
    table = {cap: {"score %": 100 * sum(v) / len(v), "n": len(v)} for cap, v in sorted(caps.items())}
    out: dict[str, Any] = {
        "headline": {"MM-Vet total (points of 100)": 100 * total},
        "tables": {"by capability": table},
    }
    if unjudged := sum(bool(r.get("unjudged")) for r in records):
        out["note"] = f"{unjudged} answers have no grade yet (counted 0): score them with --judge"
    return out
