"""Qualitative answers matched by rules: the relation a text states, its truth, and the object it picks.

Predicates ("Is A left of B?") compare the truth value each text asserts; choices ("Which is more to the
left, A or B?") compare the object each text picks.
"""

from __future__ import annotations

import re
from typing import Any

from .text import answer_text

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

_NEGATION = re.compile(r"\b(?:not|never|no longer|neither|nor|less)\b|n't\b")
_YES = re.compile(
    r"^(?:yes|yeah|yep|yup|correct|indeed|true|affirmative|certainly|absolutely|definitely|sure"
    r"|that(?:'s| is) (?:true|correct|right))\b"
)
_NO = re.compile(
    r"^(?:no|nope|incorrect|false|negative|wrong|not really|that(?:'s| is) (?:false|incorrect|wrong|not))\b"
)
# "than B", "than the B": an article may stand between the reference word and the object
_REFERENCE_BEFORE = re.compile(r"\b(?:than|of|from|between|and|to|versus|vs|with)\s*(?:(?:the|a|an)\s+)?$")
_LEAD = re.compile(
    r"^(?:(?:which|who|what)(?: one)?(?: of these(?: \w+)?)?(?: is| are| appears?| seems?)?|is|are|of|among|between)\s+"
)


def relation_of(category: str | None) -> str | None:
    """ "left_predicate" -> "left", "tall_choice" -> "tall"; None when the category names no relation."""
    head = str(category or "").lower().split("_")[0]
    return head if head in _REL_RE else None


def is_choice(category: str | None) -> bool:
    return str(category or "").lower().endswith("_choice")


def yes_no(text: str) -> bool | None:
    """A leading yes/no-style answer ("Yes,", "Incorrect,", "That is True."), else None."""
    t = re.sub(r"^[\W_]+", "", answer_text(text))
    t = re.sub(r"^(?:well|so|actually|in fact|the answer is|answer)\b[\s,:]*", "", t)
    if _YES.search(t):
        return True
    if _NO.search(t):
        return False
    return None


def _stated(text: str, rel: str) -> tuple[bool, int] | None:
    """Whether `text` (from `answer_text`) says `rel` (True) or its opposite (False) first, and where.

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
    """The objects a question compares, as they appear after `answer_text`: region tokens; "between A and B";
    "..., A or B?"; or, for a predicate on `rel`, "Is A <rel> (of|than) B?"."""
    q = answer_text(question).split("\n")[0]
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
    t = answer_text(text)
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
    t = answer_text(text)
    stated = _stated(t, rel)
    if stated is None:
        return None
    if len(candidates) == 2 and _subject(t, _mentions(t, candidates)) == 1:
        return not stated[0]
    return stated[0]


def _gt_object(gt: str, rel: str) -> str | None:
    """The object a choice gt names when no question is at hand: "The red box is taller." -> "red box"."""
    t = answer_text(gt).rstrip(".!")
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
            cands = list(dict.fromkeys(re.findall(r"region_\d+", answer_text(gt)))) or ([obj] if obj else [])
        g = pick(gt, cands, rel) if cands else None
        if g is not None:
            p = pick(pred, cands, rel)
            out = {"success": p == g, "method": "choice", "gt_pick": cands[g]}
            return {**out, "pred_pick": None if p is None else cands[p]}
        gs, ps = _stated(answer_text(gt), rel), _stated(answer_text(pred), rel)
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
        if p is None and (m := re.search(r"\b(yes|no)\b", answer_text(pred))):
            p = m.group(1) == "yes"
        return {"success": p == g, "method": "yes_no", "gt_truth": g, "pred_truth": p}
    stop = {"the", "a", "an", "is", "are", "it", "of", "to", "on", "in", "and", "than", "that", "this"}
    gw, pw = (set(re.findall(r"[a-z0-9_']+", answer_text(s))) - stop for s in (gt, pred))
    return {"success": bool(gw) and gw <= pw, "method": "words"}
