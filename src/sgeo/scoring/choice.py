"""Multiple-choice answers: the option letter (or option text) of the prediction against the gt letter."""

from __future__ import annotations

import re
from typing import Any

from .text import answer_text

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
        low = answer_text(text)
        names = [answer_text(o).rstrip(".") for o in options]
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
