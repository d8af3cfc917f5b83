"""Lengths in answer text: numbers (digits or words), units and ranges read as metres, and their score.

Quantitative answers: both texts read as metres; success iff 0.75 * gt <= pred <= 1.25 * gt (the
reference's rule); rel_error = |pred - gt| / gt.
"""

from __future__ import annotations

import re
from typing import Any

# fmt: off
_ONES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
# Unit -> metres. "feets" is in the reference's own answer-format instruction.
UNITS: dict[str, float] = {
    "m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
    "cm": 0.01, "centimeter": 0.01, "centimeters": 0.01, "centimetre": 0.01, "centimetres": 0.01,
    "mm": 0.001, "millimeter": 0.001, "millimeters": 0.001, "millimetre": 0.001, "millimetres": 0.001,
    "km": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0, "kilometre": 1000.0, "kilometres": 1000.0,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048, "feets": 0.3048, "'": 0.3048, "′": 0.3048,
    "in": 0.0254, "inch": 0.0254, "inches": 0.0254, '"': 0.0254, "''": 0.0254, "″": 0.0254,
    "yd": 0.9144, "yard": 0.9144, "yards": 0.9144,
}
# fmt: on
_SCALES = {"hundred": 100, "thousand": 1000}
_FRACTIONS = {"half": 0.5, "quarter": 0.25}
_UNIT_WORDS = {u for u in UNITS if u.isalpha()}

NUMBER_PATTERN = r"\d+(?:\.\d+)?(?:\s+\d+/\d+)?|\d+/\d+|\.\d+"
_UNIT_ALT = "|".join(sorted((re.escape(u) for u in UNITS if u not in ("in", "m")), key=len, reverse=True))
# "in" is inches unless it reads as the preposition ("3 in front", "2 in the image"); "m" is not "minutes".
_IN = r"in(?!\s+(?:the|a|an|front|total|this|that|these|those|each|all|its|their|which|between)\b)"
_UNIT = rf"(?:{_UNIT_ALT}|{_IN}|m)(?![a-z])"
_QUANTITY = re.compile(
    rf"(?:between\s+(?P<lo>{NUMBER_PATTERN})\s+and\s+(?P<hi>{NUMBER_PATTERN})"  # between 2 and 3 m
    rf"|(?P<a>{NUMBER_PATTERN})(?:\s*(?:-|–|—|to|or)\s*(?P<b>{NUMBER_PATTERN}))?)"  # 2 m, 2-3 m, 2 to 3 m
    rf"\s*-?\s*(?P<unit>{_UNIT})"  # "2 m", "2m", "2-meter"
    rf"(?:[\s,]*(?:and\s+)?(?P<a2>{NUMBER_PATTERN})\s*(?P<unit2>{_UNIT}))?"  # 5 feet 6 inches, 5'6"
)


def parse_number(text: str) -> float:
    whole, _, frac = text.strip().rpartition(" ")
    if "/" not in frac:
        return float(text)
    n, d = frac.split("/")
    return (float(whole) if whole else 0.0) + (float(n) / float(d) if float(d) else 0.0)


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


def _number_run(words: list[str], k: int) -> tuple[float, int]:
    """Value of the number words starting at words[k] and the index after them (k when there are none)."""
    w, nxt = words[k], (words[k + 1] if k + 1 < len(words) else "")
    if w in ("a", "an"):
        if nxt in _UNIT_WORDS:  # "a meter"
            return 1.0, k + 1
        if nxt in _FRACTIONS:  # "a half meter"
            return _FRACTIONS[nxt], k + 2
        if nxt in _SCALES:  # "a hundred feet"
            value, end = _number_run(["one", *words[k + 1 :]], 0)
            return value, k + end
        return 0.0, k
    if w in _FRACTIONS and nxt in ("a", "an"):  # "half a meter"
        return _FRACTIONS[w], k + 2
    if w not in _ONES and w not in _TENS:
        return 0.0, k
    total, current, i = 0.0, 0.0, k
    while i < len(words):
        w = words[i]
        if w in _ONES:
            current += _ONES[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred":
            current = max(current, 1) * 100
        elif w == "thousand":
            total, current = total + max(current, 1) * 1000, 0.0
        elif (
            w == "and"
            and words[i - 1] in _SCALES
            and i + 1 < len(words)
            and words[i + 1] in {**_ONES, **_TENS}
        ):
            pass  # "one hundred and twenty"
        elif w == "point" and i + 1 < len(words) and _ONES.get(words[i + 1], 10) < 10:
            digits = ""
            while i + 1 < len(words) and _ONES.get(words[i + 1], 10) < 10:
                digits += str(_ONES[words[i + 1]])
                i += 1
            return total + current + float("0." + digits), i + 1
        else:
            break
        i += 1
    return total + current, i


def _words_to_numbers(text: str) -> str:
    """Spelled-out numbers as digits: "twenty-five" -> "25", "three and a half" -> "3.5", "half a meter"
    -> "0.5 meter", "a meter" -> "1 meter", "two point five" -> "2.5". Expects lower case."""
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)
    tokens = re.findall(r"\d+(?:\.\d+)?|[a-z]+|[^\sa-z\d]+|\s+", text)
    where = [i for i, t in enumerate(tokens) if not t.isspace()]
    words = [tokens[i] for i in where]
    k = 0
    while k < len(words):
        after_and = k > 0 and words[k - 1] == "and"  # "and a half" is added to the number before it
        value, end = (0.0, k) if after_and and words[k] in ("a", "an") else _number_run(words, k)
        if end == k:
            k += 1
            continue
        first, last = where[k], where[end - 1]
        tokens[first : last + 1] = [_fmt(value)] + [""] * (last - first)
        k = end
    text = "".join(tokens)
    return re.sub(  # "3 and a half", "1 meter and a half"
        rf"({NUMBER_PATTERN})(\s*(?:{_UNIT})?)\s+and\s+an?\s+(half|quarter)\b",
        lambda m: _fmt(parse_number(m.group(1)) + _FRACTIONS[m.group(3)]) + m.group(2),
        text,
    )


def normalise_quantities(text: str) -> str:
    text = str(text).lower().translate(str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'}))
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,200 -> 1200
    text = re.sub(r"(?<=\d),(?=\d)", ".", text)  # 1,5 -> 1.5
    return _words_to_numbers(text)


def parse_quantity(text: str | float | None, default_unit: str | None = None) -> float | None:
    """The first length in `text`, in metres, or None.

    Numbers may be digits ("1,200 mm", "2.5m", "1/2 foot"), words ("three and a half feet", "a meter")
    or a range ("2-3 m", "between 2 and 3 meters": the midpoint); a compound length is summed ("5 feet 6
    inches", "5'6\"", "1 m 20 cm"). A number without a unit gives None unless `default_unit` names one:
    "about 3" does not say what it measures, and a guessed unit would make the score depend on the guess
    (the reference leaves this to GPT-4). An int or float is taken to be metres already.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text)
    norm = normalise_quantities(text)
    m = _QUANTITY.search(norm)
    if m is None:
        bare = re.search(rf"(?<![\w\[])({NUMBER_PATTERN})(?![\w\]])", norm) if default_unit else None
        return parse_number(bare.group(1)) * UNITS[default_unit] if bare else None
    if m["lo"] is not None:
        value = (parse_number(m["lo"]) + parse_number(m["hi"])) / 2
    elif m["b"] is not None:
        value = (parse_number(m["a"]) + parse_number(m["b"])) / 2
    else:
        value = parse_number(m["a"])
    unit = UNITS[m["unit"]]
    metres = value * unit
    if m["unit2"] is not None and UNITS[m["unit2"]] < unit:
        metres += parse_number(m["a2"]) * UNITS[m["unit2"]]
    return metres


def score_quantitative(pred: str, gt: str | float) -> dict[str, Any]:
    """Success iff 0.75 * gt <= pred <= 1.25 * gt, both in metres; an unreadable prediction fails."""
    gt_m, pred_m = parse_quantity(gt), parse_quantity(pred)
    out: dict[str, Any] = {"success": False, "rel_error": None, "pred_m": pred_m, "gt_m": gt_m}
    if gt_m is None or pred_m is None:
        return out
    tol = 1e-9 * abs(gt_m)  # a unit conversion must not flip an exact boundary
    out["success"] = 0.75 * gt_m - tol <= pred_m <= 1.25 * gt_m + tol
    if gt_m > 0:
        out["rel_error"] = abs(pred_m - gt_m) / gt_m
    return out
