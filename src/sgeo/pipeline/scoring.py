"""Rule-based scoring of spatial VQA answers, and the per-type / per-category summary of a run.

The reference (SpatialRGPT's scripts/srgpt/eval/evaluate_spatial_with_gpt4.py, also used for SpatialGeo)
asks GPT-4 to read numbers and to judge qualitative answers. Here rules make the same decisions, so scores
are free, offline and reproducible; an LLM judge can still be plugged in through `Judge`.

- quantitative: both texts read as metres; success iff 0.75 * gt <= pred <= 1.25 * gt (the reference's
  rule); rel_error = |pred - gt| / gt.
- direction ("N o'clock"): success iff the hours differ by at most 1 on the 12-hour circle (the reference's).
- qualitative: predicates ("Is A left of B?") compare the truth value each text asserts; choices ("Which
  is more to the left, A or B?") compare the object each text picks.
- multiple choice: the option letter (or option text) of the prediction against the gt letter.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

# ----------------------------------------------------------------------------------------------- lengths

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

_NUM = r"\d+(?:\.\d+)?(?:\s+\d+/\d+)?|\d+/\d+|\.\d+"
_UNIT_ALT = "|".join(sorted((re.escape(u) for u in UNITS if u not in ("in", "m")), key=len, reverse=True))
# "in" is inches unless it reads as the preposition ("3 in front", "2 in the image"); "m" is not "minutes".
_IN = r"in(?!\s+(?:the|a|an|front|total|this|that|these|those|each|all|its|their|which|between)\b)"
_UNIT = rf"(?:{_UNIT_ALT}|{_IN}|m)(?![a-z])"
_QUANTITY = re.compile(
    rf"(?:between\s+(?P<lo>{_NUM})\s+and\s+(?P<hi>{_NUM})"  # between 2 and 3 m
    rf"|(?P<a>{_NUM})(?:\s*(?:-|–|—|to|or)\s*(?P<b>{_NUM}))?)"  # 2 m, 2-3 m, 2 to 3 m
    rf"\s*-?\s*(?P<unit>{_UNIT})"  # "2 m", "2m", "2-meter"
    rf"(?:[\s,]*(?:and\s+)?(?P<a2>{_NUM})\s*(?P<unit2>{_UNIT}))?"  # 5 feet 6 inches, 5'6"
)


def _num(text: str) -> float:
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
        rf"({_NUM})(\s*(?:{_UNIT})?)\s+and\s+an?\s+(half|quarter)\b",
        lambda m: _fmt(_num(m.group(1)) + _FRACTIONS[m.group(3)]) + m.group(2),
        text,
    )


def _normalise(text: str) -> str:
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
    norm = _normalise(text)
    m = _QUANTITY.search(norm)
    if m is None:
        bare = re.search(rf"(?<![\w\[])({_NUM})(?![\w\]])", norm) if default_unit else None
        return _num(bare.group(1)) * UNITS[default_unit] if bare else None
    if m["lo"] is not None:
        value = (_num(m["lo"]) + _num(m["hi"])) / 2
    elif m["b"] is not None:
        value = (_num(m["a"]) + _num(m["b"])) / 2
    else:
        value = _num(m["a"])
    unit = UNITS[m["unit"]]
    metres = value * unit
    if m["unit2"] is not None and UNITS[m["unit2"]] < unit:
        metres += _num(m["a2"]) * UNITS[m["unit2"]]
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


# --------------------------------------------------------------------------------------------- direction

_CLOCK = re.compile(r"(?<![\d.])(\d{1,2})(?:\s*o\s*'?\s*clock|:00\b)")


def parse_clock(text: str) -> int | None:
    """The first "N o'clock" hour in `text` (digits or words, 1..12; 0 reads as 12), or None."""
    m = _CLOCK.search(_normalise(text).replace("oclock", "o clock"))
    if m is None:
        return None
    hour = int(m.group(1)) or 12
    return hour if hour <= 12 else None


def score_direction(pred: str, gt: str) -> dict[str, Any]:
    """Success iff the predicted hour is within one hour of the gt's on the 12-hour circle."""
    p, g = parse_clock(pred), parse_clock(gt)
    out: dict[str, Any] = {"success": False, "error_hours": None, "pred_hour": p, "gt_hour": g}
    if p is not None and g is not None:
        diff = abs(p - g) % 12
        out["error_hours"] = min(diff, 12 - diff)
        out["success"] = out["error_hours"] <= 1
    return out


# ------------------------------------------------------------------------------------------- qualitative

# How each relation is said. Only the two relations of one pair are searched at a time, so "higher" can
# mean "above" for above/below questions and "taller" for tall/short ones.
# fmt: off
_REL_WORDS: dict[str, list[str]] = {
    "left": [r"left(?:most)?"],
    "right": [r"right(?:most)?"],
    "above": [r"above", r"higher(?: up)?", r"on top of", r"atop", r"over", r"upper"],
    "below": [r"below", r"lower(?: down)?", r"under(?:neath)?", r"beneath", r"bottom"],
    "front": [r"in front", r"front", r"closer", r"nearer", r"closest", r"nearest", r"forward"],
    "behind": [r"behind", r"farther", r"further", r"farthest", r"furthest", r"in back", r"back", r"more distant"],
    "tall": [r"tall(?:er|est)?", r"higher", r"(?:more|greater|larger|bigger) height",
             r"height is (?:not )?(?:greater|larger|more|bigger)"],
    "short": [r"short(?:er|est)?", r"(?:less|lesser|smaller|lower) height",
              r"height is (?:not )?(?:less|smaller|lower)"],
    "big": [r"big(?:ger|gest)?", r"large(?:r|st)?", r"huge", r"massive", r"(?:greater|larger|bigger) size",
            r"size is (?:not )?(?:greater|larger|bigger)"],
    "small": [r"small(?:er|est)?", r"little", r"tin(?:y|ier|iest)", r"(?:less|lesser|smaller) size",
              r"size is (?:not )?(?:less|lesser|smaller)"],
    "wide": [r"wide(?:r|st)?", r"broad(?:er|est)?", r"(?:more|greater|larger|bigger) width",
             r"width is (?:not )?(?:greater|larger|more|bigger)"],
    "thin": [r"thin(?:ner|nest)?", r"narrow(?:er|est)?", r"slim(?:mer)?", r"less wide",
             r"(?:less|lesser|smaller) width", r"width is (?:not )?(?:less|smaller|lower)"],
}
# fmt: on
_REL_RE = {rel: re.compile(r"\b(?:" + "|".join(words) + r")\b") for rel, words in _REL_WORDS.items()}
_PAIRS = {
    "left": "right",
    "above": "below",
    "front": "behind",
    "tall": "short",
    "big": "small",
    "wide": "thin",
}
_OPPOSITE = {**_PAIRS, **{b: a for a, b in _PAIRS.items()}}
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

_NEGATION = re.compile(r"\b(?:not|never|no longer|neither|nor|less)\b|n't\b")
_YES = re.compile(
    r"^(?:yes|yeah|yep|yup|correct|indeed|true|affirmative|certainly|absolutely|definitely|sure"
    r"|that(?:'s| is) (?:true|correct|right))\b"
)
_NO = re.compile(
    r"^(?:no|nope|incorrect|false|negative|wrong|not really|that(?:'s| is) (?:false|incorrect|wrong|not))\b"
)
_REGION = re.compile(r"\bregion\s*\[?\s*(\d+)\s*\]?")
_REFERENCE_BEFORE = re.compile(r"\b(?:than|of|from|between|and|to|versus|vs|with)\s*$")
_LEAD = re.compile(
    r"^(?:(?:which|who|what)(?: one)?(?: of these(?: \w+)?)?(?: is| are| appears?| seems?)?|is|are|of|among|between)\s+"
)


def relation_of(category: str | None) -> str | None:
    """ "left_predicate" -> "left", "tall_choice" -> "tall"; None when the category names no relation."""
    head = str(category or "").lower().split("_")[0]
    return head if head in _REL_RE else None


def is_choice(category: str | None) -> bool:
    return str(category or "").lower().endswith("_choice")


def _text(text: str) -> str:
    """Lower case, one space, and "Region [0]" / "region 0" written as the one token "region_0"."""
    text = str(text).lower().replace("’", "'")
    text = _REGION.sub(lambda m: f"region_{m.group(1)}", text)
    return re.sub(r"\s+", " ", text).strip()


def yes_no(text: str) -> bool | None:
    """A leading yes/no-style answer ("Yes,", "Incorrect,", "That is True."), else None."""
    t = re.sub(r"^[\W_]+", "", _text(text))
    t = re.sub(r"^(?:well|so|actually|in fact|the answer is|answer)\b[\s,:]*", "", t)
    if _YES.search(t):
        return True
    if _NO.search(t):
        return False
    return None


def _stated(text: str, rel: str) -> tuple[bool, int] | None:
    """Whether `text` (from `_text`) says `rel` (True) or its opposite (False) first, and where.

    "not on the left", "isn't taller" and "less tall" say the opposite; the negation is looked for in the
    five words before the relation word, within its clause.
    """
    hits = [
        (m.start(), -len(m.group()), r, m) for r in (rel, _OPPOSITE[rel]) if (m := _REL_RE[r].search(text))
    ]
    if not hits:
        return None
    _, _, said, m = min(hits)
    clause = re.split(r"[.;:!?,]|\b(?:but|while|whereas)\b", text[: m.start()])[-1]
    negated = bool(_NEGATION.search(" ".join(clause.split()[-5:])) or re.search(r"\bnot\b", m.group()))
    return (said == rel) != negated, m.start()


def _core(phrase: str) -> str:
    """An object phrase without its leading verb/article and trailing comparison word."""
    p = _LEAD.sub("", phrase.strip().strip("?.!:;,").strip())
    p = re.sub(r"^(?:the|a|an)\s+", "", p)
    words = p.split()
    if len(words) > 1 and any(_REL_RE[r].fullmatch(words[-1]) for r in _REL_RE):  # "the chair taller"
        p = " ".join(words[:-1])
    return p.strip()


def candidates_in(question: str, rel: str | None = None) -> list[str]:
    """The objects a question compares, as they appear after `_text`: region tokens; "between A and B";
    "..., A or B?"; or, for a predicate on `rel`, "Is A <rel> (of|than) B?"."""
    q = _text(question).split("\n")[0]
    regions = list(dict.fromkeys(re.findall(r"region_\d+", q)))
    if regions:
        return regions
    if m := re.search(r"\bbetween (.+?) and (.+?)(?:,|\?|$)", q):
        cands = [m.group(1), m.group(2)]
    elif " or " in q.split("?")[0]:
        parts = re.split(r"[,:;]", q.split("?")[0])
        idx = max(i for i, p in enumerate(parts) if " or " in p)
        heads = [p for p in parts[:idx] if p.strip() and not re.search(r"\b(?:which|who|what)\b", p)]
        cands = [*heads, *re.split(r"\s+or\s+", parts[idx])]
    elif rel is not None and (m := re.search(r"^(?:is|are|does|do)\s+(.+?)\?", q)):
        body = m.group(1)
        hits = [h for r in (rel, _OPPOSITE[rel]) if (h := _REL_RE[r].search(body))]
        if not hits:
            return []
        h = min(hits, key=lambda h: h.start())
        before = re.sub(
            r"\s+(?:to|on|in|at|more|less|positioned|located|situated|the)(?:\s+the)?\s*$",
            "",
            body[: h.start()],
        )
        after = re.sub(r"^\s*(?:(?:side|of|than|compared to|relative to|from)\s+)+", "", body[h.end() :])
        cands = [before, after]
    else:
        return []
    cores = [_core(c) for c in cands]
    return [c for c in dict.fromkeys(cores) if c]


def _mentions(text: str, candidates: list[str]) -> list[tuple[int, int]]:
    """Sorted (position, candidate index) of each mention; longer names first so "box" cannot hide "red box"."""
    found, taken = [], [False] * len(text)
    for idx in sorted(range(len(candidates)), key=lambda i: -len(candidates[i])):
        for m in re.finditer(r"\b" + re.escape(candidates[idx]) + r"\b", text):
            if not any(taken[m.start() : m.end()]):
                found.append((m.start(), idx))
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
    return sorted(found)


def _subject(text: str, mentions: list[tuple[int, int]]) -> int | None:
    """The first mentioned candidate that is not a comparison reference ("... than B", "... of B")."""
    for pos, idx in mentions:
        if not _REFERENCE_BEFORE.search(text[:pos]):
            return idx
    return mentions[0][1] if mentions else None


def pick(text: str, candidates: list[str], rel: str) -> int | None:
    """Index of the candidate that `text` says is `rel` (e.g. more to the left), or None."""
    t = _text(text)
    subject = _subject(t, _mentions(t, candidates))
    if subject is None:
        return None
    stated = _stated(t, rel)
    if stated is None or stated[0]:
        return subject
    others = [i for i in range(len(candidates)) if i != subject]
    return others[0] if len(others) == 1 else None  # "A is shorter" answers "which is taller, A or B?": B


def _truth(text: str, rel: str, candidates: list[str]) -> bool | None:
    """Does `text` say "candidates[0] is <rel> (of candidates[1])"? A leading yes/no decides; otherwise
    the relation it states, flipped when its subject is candidates[1] ("B is left of A")."""
    marker = yes_no(text)
    if marker is not None:
        return marker
    t = _text(text)
    stated = _stated(t, rel)
    if stated is None:
        return None
    if len(candidates) == 2 and _subject(t, _mentions(t, candidates)) == 1:
        return not stated[0]
    return stated[0]


def _gt_object(gt: str, rel: str) -> str | None:
    """The object a choice gt names when no question is at hand: "The red box is taller." -> "red box"."""
    t = _text(gt).rstrip(".!")
    subject = re.match(r"^(.+?)\s+(?:is|are|appears?|seems?|looks?|stands?)\b", t)  # "the red box is taller"
    complement = re.search(r"\b(?:is|are)\s+(.+)$", t)  # "positioned in front is the red box"
    for phrase in (subject and subject.group(1), complement and complement.group(1), t):
        phrase = _core(phrase or "")
        if phrase and not any(_REL_RE[r].search(phrase) for r in (rel, _OPPOSITE[rel])):
            return phrase
    return None


def score_qualitative(
    pred: str, gt: str, category: str | None, question: str | None = None
) -> dict[str, Any]:
    """Rule-based match of a qualitative answer (`question` lets it see which objects are compared).

    Predicates (`*_predicate`): the truth value each text asserts. Choices (`*_choice`): the candidate each
    text picks; when the gt names none, the relation each text states. Other categories: yes/no, then the
    gt's content words must all appear in the prediction.
    """
    rel = relation_of(category)
    if rel is not None and is_choice(category):
        cands = candidates_in(question or "", rel)
        if not cands:  # no question: the regions the gt names, or the object it names
            obj = _gt_object(gt, rel)
            cands = list(dict.fromkeys(re.findall(r"region_\d+", _text(gt)))) or ([obj] if obj else [])
        g = pick(gt, cands, rel) if cands else None
        if g is not None:
            p = pick(pred, cands, rel)
            out = {"success": p == g, "method": "choice", "gt_pick": cands[g]}
            return {**out, "pred_pick": None if p is None else cands[p]}
        gs, ps = _stated(_text(gt), rel), _stated(_text(pred), rel)
        return {"success": gs is not None and ps is not None and gs[0] == ps[0], "method": "relation"}
    if rel is not None:
        cands = candidates_in(question or "", rel)
        cands = cands if len(cands) == 2 else []
        g = _truth(gt, rel, cands)
        if g is not None:
            p = _truth(pred, rel, cands)
            return {"success": p == g, "method": "predicate", "gt_truth": g, "pred_truth": p}
    g = yes_no(gt)
    if g is not None:
        p = yes_no(pred)
        if p is None and (m := re.search(r"\b(yes|no)\b", _text(pred))):
            p = m.group(1) == "yes"
        return {"success": p == g, "method": "yes_no", "gt_truth": g, "pred_truth": p}
    stop = {"the", "a", "an", "is", "are", "it", "of", "to", "on", "in", "and", "than", "that", "this"}
    gw, pw = (set(re.findall(r"[a-z0-9_']+", _text(s))) - stop for s in (gt, pred))
    return {"success": bool(gw) and gw <= pw, "method": "words"}


# --------------------------------------------------------------------------------------- multiple choice

CHOICE_LETTERS = "ABCDEFGHIJ"
MULTIPLE_CHOICE_TYPES = ("multi-choice", "multiple-choice", "multiple_choice", "mc")


def parse_choice(pred: str, options: list[str] | None = None) -> str | None:
    """The option letter `pred` gives: "B", "(B)", "B.", "B) text", "Answer: B", or an option's own text."""
    valid = CHOICE_LETTERS[: len(options)] if options else CHOICE_LETTERS[:6]
    text = str(pred).strip()
    for pattern in (
        rf"^\(?([{valid}])\)?[.:)]?$",  # the letter alone
        rf"^\(([{valid}])\)",  # "(B) ..."
        rf"^([{valid}])[.:)](?:\s|$)",  # "B. ...", "B) ..."
        rf"(?i:answer|option|choice)(?:\s+is)?\s*:?\s*\(?([{valid}])\)?(?![\w'])",  # "Answer: B"
        rf"(?i:answer|option|choice)(?:\s+is)?\s*:?\s*\(?([{valid.lower()}])(?:\)|[.:]?$)",  # "answer: b."
        rf"\(([{valid}])\)",  # "... (B) ..."
    ):
        if m := re.search(pattern, text):
            return m.group(1).upper()
    if options:
        low = _text(text)
        names = [_text(o).rstrip(".") for o in options]
        hits = [k for k, o in enumerate(names) if o and re.search(r"\b" + re.escape(o) + r"\b", low)]
        hits = [
            k for k in hits if not any(j != k and names[k] in names[j] for j in hits)
        ]  # "left" < "upper left"
        if len(hits) == 1:
            return CHOICE_LETTERS[hits[0]]
    # a lone capital letter; "A" followed by a lower-case word is the article
    letters = set(re.findall(rf"(?<![\w'])((?!A\s+[a-z])[{valid}])(?![\w'])", text))
    return letters.pop() if len(letters) == 1 else None


def score_multiple_choice(pred: str, gt_letter: str, options: list[str] | None = None) -> dict[str, Any]:
    """Success iff the letter read from `pred` is the gt letter (itself read by `parse_choice`)."""
    gt = parse_choice(gt_letter, options) or str(gt_letter).strip().upper()
    p = parse_choice(pred, options)
    return {"success": p == gt, "pred_letter": p, "gt_letter": gt}


# -------------------------------------------------------------------------------------------- dispatch


class Judge(Protocol):
    """An optional (LLM) judge for qualitative answers: True when `pred` answers like `gt`."""

    def __call__(self, question: str, pred: str, gt: str) -> bool: ...


def kind_of(record: dict[str, Any]) -> str:
    """The scorer a record needs: choice_letter, direction, quantitative, judgment, open or qualitative."""
    info = record.get("qa_info") or {}
    qtype, category = str(info.get("type", "")).lower(), str(info.get("category", "")).lower()
    if qtype in MULTIPLE_CHOICE_TYPES or (record.get("options") and qtype not in ("judgment", "open-ended")):
        return "choice_letter"
    if category == "direction":  # type "quantitative" in SpatialRGPT-Bench
        return "direction"
    return {"quantitative": "quantitative", "judgment": "judgment", "open-ended": "open"}.get(
        qtype, "qualitative"
    )


def _score_open(pred: str, gt: str) -> dict[str, Any]:
    """SpatialScore open-ended: a length when the gt has a unit, else the same number, else the same text."""
    if parse_quantity(gt) is not None:
        return score_quantitative(pred, gt)
    p, g = (re.search(_NUM, _normalise(s)) for s in (pred, gt))
    if g is None:
        return {"success": _text(pred).rstrip(".") == _text(gt).rstrip(".")}
    return {"success": p is not None and math.isclose(_num(p.group()), _num(g.group()))}


def score_item(record: Any, pred: str | None = None, judge: Judge | None = None) -> dict[str, Any]:
    """Score one answer: a record {"pred", "gt", "qa_info", "question"?, "options"?} or a `BenchItem`
    with `pred`. Returns at least {"kind", "success"}; `judge`, when given, decides qualitative items."""
    if not isinstance(record, dict):  # a BenchItem
        record = record.to_record(pred or "")
    pred = str(record.get("pred") or "") if pred is None else pred
    gt = str(record.get("gt", ""))
    question = str(record.get("question") or record.get("prompt") or "")
    kind = kind_of(record)
    if kind == "choice_letter":
        out = score_multiple_choice(pred, gt, record.get("options"))
    elif kind == "direction":
        out = score_direction(pred, gt)
    elif kind == "quantitative":
        out = score_quantitative(pred, gt)
    elif kind == "open":
        out = _score_open(pred, gt)
    elif judge is not None:
        out = {"success": bool(judge(question, pred, gt)), "method": "judge"}
    else:
        category = None if kind == "judgment" else (record.get("qa_info") or {}).get("category")
        out = score_qualitative(pred, gt, category, question)
    return {"kind": kind, **out}


# ----------------------------------------------------------------------------------------------- summary


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
