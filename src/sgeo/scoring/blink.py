"""BLINK's scoring, as its authors' code does it (github.com/zeyofu/BLINK_Benchmark, eval/).

- `test_benchmark.py` `analyze_answer`: an answer that is exactly "A".."E" becomes "(A)".."(E)"; exactly
  "(A)".."(E)" stays; otherwise the item's choice marks ("(A)", "(B)", ... as many as it has options) found
  among the answer's white-space separated words decide: the one mark of the last paragraph, else the one
  mark of the whole answer. An answer with no mark, or with several and not one in its last paragraph, goes
  to GPT-3.5 with `multiple_choice.py`'s prompt ("(Z)" when nothing matches): here to `--judge` when given,
  and without one it stays unmatched (wrong).
- `evaluate.py` `eval_prediction`: correct iff the prediction equals the answer ("(A)"); accuracy per
  subtask, and BLINK's total is the mean of the subtasks' accuracies (not of the items).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .judge import cached_reply

MARKS = ["(A)", "(B)", "(C)", "(D)", "(E)"]


def blink_prediction(answer: str, n_options: int) -> str | None:
    """`analyze_answer` without its GPT fallback: the mark the rules read, or None where theirs asks GPT."""
    choices = MARKS[:n_options]
    words = set(answer.split())
    intersect = [m for m in choices if m in words]
    intersect_last = [m for m in choices if m in set(answer.split("\n\n")[-1].split())]
    if answer in ["A", "B", "C", "D", "E"]:
        return f"({answer})"
    if answer in MARKS:
        return answer
    if (len(intersect) != 1 and len(intersect_last) != 1) or len(intersect) < 1:
        return None
    return intersect_last[0] if len(intersect_last) == 1 else intersect[0]


def score_blink(record: dict[str, Any]) -> dict[str, Any]:
    """One answer by the rules: {"kind", "success", "prediction"} ("prediction" None: their GPT matcher's)."""
    prediction = blink_prediction(str(record.get("pred") or ""), len(record.get("options") or MARKS))
    out = {
        "kind": "multi-choice",
        "success": prediction == str(record.get("gt", "")),
        "prediction": prediction,
    }
    if prediction is None:
        out["unmatched"] = True  # their script would ask GPT-3.5 (pass --judge to do so)
    return out


def matcher_prompt(question: str, options: str, prediction: str) -> str:
    """multiple_choice.py `build_prompt`, verbatim (its missing spaces and the "{}?" after the question)."""
    tmpl = (
        "You are an AI assistant who will help me to match an answer with several options of a single-choice question. "
        "You are provided with a question, several options, and an answer, and you need to find which option is most similar to the answer. "
        "If the answer says things like refuse to answer, I'm sorry cannot help, etc., output (Z)"
        "If the meaning of all options are significantly different from the answer, or the answer does not select any option, output (Z)"
        "Your should output one of the choices, (A),(B),(C),(D),(E) (if they are valid options), or (Z)\n"
        "Example 1: \n"
        "Question: Which point is closer to the camera?\nSelect from the following choices.\nOptions: (A) Point A\n(B) Point B\n(Z) Failed\nAnswer: Point B, where the child is sitting, is closer to the camera.\nYour output: (B)\n"
        "Example 2: \n"
        "Question: Which point is closer to the camera?\nSelect from the following choices.\nOptions: (A) Point A\n(B) Point B\n(Z) Failed\nAnswer: I'm sorry, but I can't assist with that request.\nYour output: (Z)\n"
        "Example 3: \n"
        "Question: Which point is corresponding to the reference point?\nSelect from the following choices.\nOptions: (A) Point A\n(B) Point B\n(Z) Failed\nAnswer:The reference point (REF) on the first image is at the tip of the pot, which is the part used to Poke if the pots were used for that action. Looking at the second image, we need to find the part of the object that would correspond to poking.\n(A) Point A is at the tip of the spoon's handle, which is not used for poking.\n(B) Point B is at the bottom of the spoon, which is not used for poking.\n(C) Point C is on the side of the pspoonot, which is not used for poking.\n(D) Point D is at the tip of the spoon, which is not used for poking.\n\nTherefore, there is no correct answer in the choices\nYour output: (Z)\n"
        "Example 4: \n"
        "Question: {}?\nOptions: {}\n(Z) Failed\nAnswer: {}\nYour output: "
    )  # fmt: skip
    return tmpl.format(question, options, prediction)


def blink_judge(record: dict[str, Any], judge) -> tuple[dict[str, Any], bool] | None:
    """`analyze_answer`'s GPT-3.5 step for an answer the rules leave unmatched: their matcher prompt as one
    user message, temperature 0, the reply taken as the prediction verbatim (so only "(B)" itself is right).
    None where the rules decide."""
    options = record.get("options") or []
    if blink_prediction(str(record.get("pred") or ""), len(options) or len(MARKS)) is not None:
        return None
    listing = "\n".join(f"{MARKS[i]} {option}" for i, option in enumerate(options))
    question = f"{record.get('question', '')}\nSelect from the following choices"
    messages = [{"role": "user", "content": matcher_prompt(question, listing, str(record.get("pred") or ""))}]
    reply, asked = cached_reply(record, judge, messages, json_reply=False)
    return {"kind": "multi-choice", "success": reply == str(record.get("gt", "")), "prediction": reply}, asked


def blink_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """evaluate.py's figures: accuracy per subtask and their mean (BLINK's total)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        hits[str((r.get("qa_info") or {}).get("category", "unknown"))].append(bool(r.get("success")))
    per_task = {task: sum(h) / len(h) for task, h in sorted(hits.items())}
    headline = (
        {"BLINK accuracy (mean over subtasks)": sum(per_task.values()) / len(per_task)} if per_task else {}
    )
    out: dict[str, Any] = {"headline": headline}
    if unmatched := sum(bool(r.get("unmatched")) for r in records):
        out["note"] = (
            f"{unmatched} answers name no option the rules can read; BLINK's code asks GPT-3.5 for those "
            "(--judge URL does), here they count as wrong"
        )
    return out
