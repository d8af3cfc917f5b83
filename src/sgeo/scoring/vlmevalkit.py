"""VLMEvalKit's reading of a multiple-choice answer, for benchmarks whose authors score through VLMEvalKit.

`vlmeval/utils/matching_util.py` `can_infer` as it stood when 3DSRBench's authors published their circular
TSV and results script (github.com/open-compass/VLMEvalKit, commit 27dd622, January 2025; the August 2025
rewrite changed it), and `vlmeval/dataset/utils/multiple_choice.py` `extract_answer_from_item` /
`eval_vanilla` under the `exact_matching` policy (no GPT judge): the option `can_infer` reads, else "Z"
(no option, so wrong).

- `can_infer_option`: the answer with ``.()[],:;!*#{}`` turned into spaces, split on white space; when exactly
  one of the item's option letters is among the words, that letter ("B", "(B)", "B. lamp", "A cat" -> A); with
  none of them and a word "Z", "Z"; a refusal phrase of theirs -> "Z".
- else `can_infer_text`: the options whose (lower-cased) text is inside the lower-cased answer; exactly one ->
  its letter ("lamp" -> the lamp's letter).
"""

from __future__ import annotations

from collections.abc import Mapping

_PUNCTUATION = ".()[],:;!*#{}"
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def can_infer_option(answer: str, choices: Mapping[str, str]) -> str | None:
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in _REFUSALS):
        return "Z"
    for ch in _PUNCTUATION:
        answer = answer.replace(ch, " ")
    words = [w.strip() for w in answer.split()]
    found = [letter for letter in choices if letter in words]
    if len(found) == 1:
        return found[0]
    if not found and "Z" in words:
        return "Z"
    return None


def can_infer_text(answer: str, choices: Mapping[str, str]) -> str | None:
    answer = answer.lower()
    found = [letter for letter, text in choices.items() if str(text).lower() in answer]
    return found[0] if len(found) == 1 else None


def can_infer(answer: str, choices: Mapping[str, str]) -> str | None:
    """The option letter VLMEvalKit reads in `answer` ("Z": none, said so), or None where it would ask GPT."""
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


def exact_matching(answer: str, choices: Mapping[str, str]) -> str:
    """`extract_answer_from_item` without a judge model: `can_infer`'s letter, else "Z"."""
    return can_infer(answer, choices) or "Z"
