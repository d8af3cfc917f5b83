"""SpatialRGPT's LLM-judge prompts and how their script reads the verdicts, as pure functions.

Source: github.com/AnjieCheng/SpatialRGPT, scripts/srgpt/eval/evaluate_spatial_with_gpt4.py:
`evaluate_quan_dir_question` (direction), `evaluate_quan_dist_question` (the five distance categories) and
`evaluate_qual_question` (qualitative, with the examples of `judge_examples`), all with the system message
`SYSTEM` and `response_format={"type": "json_object"}`; the reading of each verdict follows the main loop
of that script. One difference, on purpose: their script fills the question, answer and response into an
f-string and then calls `.format(question, answer, response)` on the result again, so any "{" in those
texts (the reference eval asks for answers like "{3 o'clock}") makes the call raise and the item count as a
failed match. Here the prompt is the filled f-string, the text they meant to send;
`reference_format_fails` tells which items their script would have lost that way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .judge_examples import EXAMPLES

SYSTEM = "You are a helpful assistant designed to output JSON."
# the quantitative categories their script judges; other quantitative categories it leaves out
DISTANCE_CATEGORIES = (
    "vertical_distance_data", "horizontal_distance_data", "distance_data", "width_data", "height_data",
)  # fmt: skip

DIRECTION_PROMPT = """
You should help me to evaluate the response given the question and the correct answer.
You need to extract the direction of the correct answer and response.
You should output two integers in clock directions, one for the answer, and one for the response.
The output should be in JSON format.


Example 1:
Question: If you are at Region [0], where will you find Region [1]?
Answer: Region [0] will find Region [1] around the 2 o'clock direction.
Response: If you are at Region [0], you will find Region [1] around the 2 o'clock direction.
"answer_direction": 2, "response_direction": 2

Example 2:
Question: If you are at Region [0], where will you find Region [1]?
Answer: Region [0] will find Region [1] around the 12 o'clock direction.
Response: If you are at Region [0], you will find Region [1] around the 11 o'clock direction.
"answer_direction": 12, "response_direction": 11

Your Turn:
Question: {question}
Answer: {answer}
Response: {response}

"""

DISTANCE_PROMPT = """
You should help me to evaluate the response given the question and the correct answer.
You need to convert the distance of the correct answer and response to meters. The conversion factors are as follows: 1 inch = 0.0254 meters. 1 foot = 0.3048 meters. 1 centimeter (cm) = 0.01 meters.
You should output two floats in meters, one for the answer, and one for the response.
The output should be in JSON format.


Example 1:
Question: Measure the width of Region [0].?
Answer: The width of Region [0] is 1.02 meters.
Response: Region [0] is 2.17 meters wide.
"answer_in_meters": 1.02, "response_in_meters": 2.17

Example 2:
Question: What is the height of Region [1]?
Answer: The height of Region [1] is 10.0 inches.
Response: It is 48.47 centimeters.
"answer_in_meters": 0.25, "response_in_meters": 0.48

Example 3:
Question: What is the radius of Region [0]?
Answer: Region [0] is 77.56 centimeters wide.
Response: It is 35.9 inches wide.
"answer_in_meters": 0.78, "response_in_meters": 0.91

Example 4:
Question: How far away is Region [0] from Region [1]?
Answer: Region [0] and Region [1] are 11.4 meters apart.
Response: 22.32 feet.
"answer_in_meters": 11.4, "response_in_meters": 6.80

Your Turn:
Question: {question}
Answer: {answer}
Response: {response}

"""

QUALITATIVE_HEAD = """
You should help me to evaluate the response given the question and the correct answer.
To mark a response, you should output a single integer between 0 and 1.
1 means that the response perfectly matches the answer.
0 means that the response is completely different from the answer.
The output should be in JSON format.

"""

QUALITATIVE_TAIL = "\n\nYour Turn:\nQuestion: {question}\nAnswer: {answer}\nResponse: {response}\n    "


def judge_kind(record: dict[str, Any]) -> str | None:
    """ "direction", "distance" or "qualitative" (the prompt a record gets), None when their script would
    not judge it."""
    info = record.get("qa_info") or {}
    category, qtype = str(info.get("category", "")), info.get("type")
    if qtype == "quantitative":
        if category == "direction":
            return "direction"
        return "distance" if category in DISTANCE_CATEGORIES else None
    return "qualitative" if qtype == "qualitative" else None


def _examples(category: str) -> str | None:
    return EXAMPLES.get("choice" if "choice" in category else category)


def judge_prompt(kind: str, question: str, answer: str, response: str, category: str = "") -> str | None:
    """The user message of the judge call; None for a qualitative category without examples (their script
    fails to open the template file and counts the item as a failed match)."""
    fill = {"question": question, "answer": answer, "response": response}
    if kind == "direction":
        return DIRECTION_PROMPT.format(**fill)
    if kind == "distance":
        return DISTANCE_PROMPT.format(**fill)
    examples = _examples(category)
    if examples is None:
        return None
    return QUALITATIVE_HEAD + examples.format(question=question) + QUALITATIVE_TAIL.format(**fill)


def judge_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def reference_format_fails(kind: str, question: str, answer: str, response: str, category: str = "") -> bool:
    """Whether their script's second `.format(question, answer, response)` raises for these texts."""
    filled = judge_prompt(kind, question, answer, response, category)
    if filled is None:
        return True
    tail = QUALITATIVE_TAIL.format(question=question, answer=answer, response=response)
    try:
        (tail if kind == "qualitative" else filled).format(question, answer, response)
    except (IndexError, KeyError, ValueError, AttributeError, TypeError):
        return True
    return False


def _json_object(reply: str) -> dict[str, Any] | None:
    """The JSON object of a reply: the whole text (as their script reads it) or, for local models that
    wrap it in prose or a code fence, the outermost {...} in it."""
    outer = re.search(r"\{.*\}", reply, re.DOTALL)
    for text in (reply, outer.group(0) if outer else None):
        try:
            value = json.loads(text) if text is not None else None
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def read_verdict(kind: str, reply: str | None) -> dict[str, Any]:
    """Score one judge reply as their main loop does. A reply that cannot be read is a failed match:
    success False, as theirs (`match_failed` marks it; their `Match_fail_count`)."""
    verdict = _json_object(reply) if reply is not None else None
    failed = {"success": False, "method": "judge", "match_failed": True}
    if verdict is None:
        return failed
    try:
        if kind == "direction":
            answer, response = int(verdict["answer_direction"]), int(verdict["response_direction"])
            diff = abs(answer - response)
            error = min(diff, 12 - diff)
            out = {"success": error <= 1, "error_hours": error, "gt_hour": answer, "pred_hour": response}
        elif kind == "distance":
            answer, response = float(verdict["answer_in_meters"]), float(verdict["response_in_meters"])
            ok = 0.75 * answer <= response <= 1.25 * answer
            error = abs(response - answer) / (answer + 1e-4)
            out = {"success": ok, "rel_error": error, "gt_m": answer, "pred_m": response}
        else:
            mark = verdict["your_mark"]
            out = {"success": mark is not None and float(mark) > 0, "mark": mark}
    except (KeyError, TypeError, ValueError, OverflowError, ZeroDivisionError):
        return failed
    return {**out, "method": "judge"}
