"""SpatialScore's own scoring rules, so that sgeo's numbers are theirs.

Source: github.com/haoningwu3639/SpatialScore, `version_0/test_all-in-one.py` `main()` (the same block is in
`test_qwen.py` and `test_internvl.py`) picks a rule by `question_type` and `source`; the text readers are in
`version_0/utils/util.py`. Each function below names the one it follows, and keeps its quirks (a letter
a-f anywhere counts as an option, "right" reads as yes, substring unit tests): a score is only comparable
with the published tables if it is computed the same way. The item score is a credit in [0, 1]: 1 or 0,
or VSI-Bench's mean relative accuracy; a table's accuracy is the mean credit, as their summaries.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# util.py strips these tags before reading an answer.
_TAGS = re.compile(r"</?(?:CONCLUSION|conclusion|ANSWER|answer|ASSISTANT|assistant)>")
_ASSISTANT_LETTER = re.compile(r"ASSISTANT:\s*\(?([A-Fa-f])\)?")


def extract_option(text: str) -> str:
    """The option letter of an answer (util.py `extract_option`): upper-case A-F, else the cleaned text."""
    text = str(text).strip()
    if re.match(r"^[A-Fa-f]\.?$", text):
        return text[0].upper()
    if m := _ASSISTANT_LETTER.search(text):
        return m.group(1).upper()
    clean = _TAGS.sub("", text).strip()
    for pattern in (
        r"<conclusion>\s*\(([A-Fa-f])\).*?</conclusion>",
        r"<conclusion>\s*\(?([A-Fa-f])\)?\.?\s*</conclusion>",
    ):
        if m := re.search(pattern, text, re.IGNORECASE):
            return m.group(1).upper()
    for pattern in (
        r"(?i)(?:answer|option)[:\s]*\(?([A-Fa-f])\)?\.?",  # "Answer: (B)"
        r"(?i)(?:^|\s)\(?([A-Fa-f])\)\.?(?:$|\s|\.)",  # "(b)", "B)"
        r"(?i)(?:^|\s)([A-Fa-f])\.?(?:$|\s|\.|,)",  # a lone letter, "b." (also the article "a")
        r"(?i)(?:^|\s)([A-Fa-f])\.(?:$|\s)",
    ):
        if m := re.search(pattern, text):
            return m.group(1).upper()
    if m := re.search(r"[A-Fa-f]", text):  # their last resort: any letter a-f anywhere
        return m.group(0).upper()
    return clean


_YES = (r"\byes\b", r"\byeah\b", r"\byep\b", r"\bcorrect\b", r"\btrue\b", r"\bright\b", r"\bagreed?\b")
_NO = (r"\bno\b", r"\bnope\b", r"\bnot\b", r"\bfalse\b", r"\bwrong\b", r"\bincorrect\b", r"\bdisagreed?\b")


def extract_yes_no(text: str) -> str:
    """ "Yes" / "No" read from an answer (util.py `extract_yes_no`), else the cleaned text.

    Yes-words are searched before no-words, so "No, that is not right" reads as "Yes", as theirs does."""
    text = str(text).strip()
    if text.lower() in ("yes", "no"):
        return text.capitalize()
    if m := _ASSISTANT_LETTER.search(text):
        return m.group(1).upper()
    clean = _TAGS.sub("", text).strip()
    low = clean.lower()
    if m := re.search(r"<conclusion>\s*(yes|no)\s*</conclusion>", text, re.IGNORECASE):
        return m.group(1).capitalize()
    for words, answer in ((_YES, "Yes"), (_NO, "No")):
        if any(re.search(w, low) for w in words):
            return answer
    return clean


# util.py `extract_number`'s table; the order matters ("seven" is found in "there are seventeen").
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
    "nineteen": "19", "twenty": "20", "first": "1", "second": "2", "third": "3", "fourth": "4",
    "fifth": "5", "sixth": "6", "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10",
}  # fmt: skip


def extract_number(text: str) -> str:
    """The number an answer gives, as text (util.py `extract_number`): digits, then number words."""
    text = str(text).strip()
    if text.isdigit():
        return text
    if m := _ASSISTANT_LETTER.search(text):
        return m.group(1).upper()
    clean = _TAGS.sub("", text).strip()
    low = clean.lower()
    if m := re.search(r"<conclusion>\s*(\d+)\s*</conclusion>", text, re.IGNORECASE):
        return m.group(1)
    if m := re.search(r"\d+(?:\.\d+)?", low):
        return m.group(0)
    for word, digit in _NUMBER_WORDS.items():
        phrases = (f" {word} ", f"there are {word}", f"there is {word}", f"shows {word}")
        if low.startswith(word) or any(p in low for p in phrases) or low.endswith(f" {word}"):
            return digit
    words = low.split()
    for word, digit in _NUMBER_WORDS.items():
        if word in words:
            return digit
    return clean


# util.py `extract_numeric_with_unit`: lengths in centimetres; an unknown unit counts as 1.
_TO_CM = {
    "m": 100, "meter": 100, "meters": 100, "metre": 100, "metres": 100,
    "cm": 1, "centimeter": 1, "centimeters": 1, "mm": 0.1,
    "ft": 30.48, "foot": 30.48, "feet": 30.48, "in": 2.54, "inch": 2.54, "inches": 2.54,
}  # fmt: skip
_VALUE_PATTERNS = (
    (r"\\scalar\{([^}]+)\}", 0),  # the QSpatial prompt's "\scalar{2.5} \distance_unit{meters}"
    (r"\*\*([\d.]+)\s*(?:[a-zA-Z]+)\*\*", 0),  # **2.8 meters**
    (r"(?:approximately|about|roughly)\s*\**([\d.]+)\s*(?:[a-zA-Z]+)\**", re.IGNORECASE),
    (r"(\d+\.?\d*)\s*(?:[a-zA-Z]+)", 0),  # 5 meters, 3.2cm
)
_UNIT_PATTERNS = (
    (r"\\distance_unit\{([^}]+)\}", 0),
    (r"\*\*\d+\.?\d*\s*([a-zA-Z]+)\*\*", 0),
    (r"(?:approximately|about|roughly)\s*\**\d+\.?\d*\s*([a-zA-Z]+)\**", re.IGNORECASE),
    (r"\d+\.?\d*\s*([a-zA-Z]+)", 0),
)


def _first_match(patterns, text: str) -> re.Match[str] | None:
    for pattern, flags in patterns:
        if m := re.search(pattern, text, flags):
            return m
    return None


def numeric_with_unit(pred: str, gt: str | None = None, tolerance: float = 2.0) -> dict[str, Any]:
    """util.py `extract_numeric_with_unit`: the length in `pred` and whether it is within `tolerance` x of
    `gt` (max(p/g, g/p) < 2: a ratio of 1.7 passes). Returns {"value", "unit", "is_correct"}."""
    out: dict[str, Any] = {"value": None, "unit": None, "is_correct": False}
    pred = _TAGS.sub("", str(pred)).strip()
    if (m := _first_match(_VALUE_PATTERNS, pred)) is not None:
        numbers = re.findall(r"\d+\.?\d*", m.group(1))
        if numbers:
            out["value"] = float(numbers[0])
    if (m := _first_match(_UNIT_PATTERNS, pred)) is not None:
        out["unit"] = m.group(1).lower().strip()
    if gt is None or out["value"] is None or out["unit"] is None:
        return out
    if (g := re.search(r"(\d+\.?\d*)\s*([a-zA-Z]+)", str(gt))) is None:
        return out
    gt_value, gt_unit = float(g.group(1)), g.group(2).lower().strip()
    if out["value"] == 0 or gt_value == 0:
        out["is_correct"] = out["value"] == 0 and gt_value == 0
        return out
    p, q = out["value"] * _TO_CM.get(out["unit"], 1), gt_value * _TO_CM.get(gt_unit, 1)
    out["is_correct"] = max(p / q, q / p) < tolerance
    return out


def mean_relative_accuracy(
    pred: float, target: float, start: float = 0.5, end: float = 0.95, interval: float = 0.05
) -> float:
    """VSI-Bench's MRA (util.py `mean_relative_accuracy`): the share of thresholds 1 - c, c in
    np.linspace(start, end, int((end - start) / interval + 2)), that |pred - target| / target stays within.
    In floating point that count is 10, not 11: c = 0.50, 0.55, ..., 0.95. So 5 for 4 (error 0.25) gets 0.6."""
    error = abs(pred - target) / target if target != 0 else float("inf")  # util.py `abs_dist_norm`
    thresholds = np.linspace(start, end, int((end - start) / interval + 2))
    return float((error <= 1 - thresholds).mean())


# test_all-in-one.py `main()`: a ground truth holding any of these substrings is read as a length. The bare
# "m" makes almost any word count ("Tom"); kept, since it decides which rule applies.
_UNIT_SUBSTRINGS = (
    "meter", "meters", "m", "cm", "centimeter", "centimeters", "km", "kilometer", "kilometers",
    "inch", "inches", "ft", "foot", "feet",
)  # fmt: skip


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def score_spatialscore(record: dict[str, Any]) -> dict[str, Any]:
    """One answer scored by test_all-in-one.py `main()`'s rules. Reads `pred`, `gt` (the row's `answer`
    as shipped) and qa_info `type` (`question_type`) and `source`. Returns {"kind", "success", "credit"}
    plus what each rule read."""
    info = record.get("qa_info") or {}
    qtype, source = str(info.get("type", "")).lower(), info.get("source")
    pred, gt = str(record.get("pred") or ""), str(record.get("gt", ""))
    if qtype == "multi-choice":
        p, g = extract_option(pred), extract_option(gt)
        ok = p.upper() == g.upper()
        return {"kind": qtype, "success": ok, "credit": float(ok), "pred_answer": p, "gt_answer": g}
    if qtype == "judgment":
        p, g = extract_yes_no(pred), extract_yes_no(gt)
        ok = p.lower() == g.lower()
        return {"kind": qtype, "success": ok, "credit": float(ok), "pred_answer": p, "gt_answer": g}
    if any(unit in gt.lower() for unit in _UNIT_SUBSTRINGS):
        read = numeric_with_unit(pred, gt)
        ok = bool(read["is_correct"])
        out = {"kind": "open-ended/length", "success": ok, "credit": float(ok)}
        return {**out, "pred_value": read["value"], "pred_unit": read["unit"]}
    if source == "RealWorldQA":
        ok = pred.lower() == gt.lower()
        return {"kind": "open-ended/exact", "success": ok, "credit": float(ok)}
    # Their float(extract_number(pred)) falls back to 0.0; an unreadable gt stops their script (here: 0).
    p = _as_float(extract_number(pred))
    p = 0.0 if p is None else p
    g = _as_float(extract_number(gt))
    if g is None:
        return {
            "kind": "open-ended/number",
            "success": False,
            "credit": 0.0,
            "pred_value": p,
            "gt_value": None,
        }
    if source == "VSI-Bench_8":
        credit = (1.0 if g == 0.0 else 0.0) if p == 0 else mean_relative_accuracy(p, g)
        out = {"kind": "open-ended/mra", "success": credit == 1.0, "credit": credit}
        return {**out, "pred_value": p, "gt_value": g}
    ok = p == g
    return {"kind": "open-ended/number", "success": ok, "credit": float(ok), "pred_value": p, "gt_value": g}
