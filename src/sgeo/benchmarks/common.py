"""What every benchmark loader shares: the `BenchItem` it yields and the reading of a JSON / JSONL file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.model.conversation import IMAGE_TOKEN
from sgeo.pipeline.json_files import loads, read_text

# LLaVA-1.5's multiple-choice instruction (SpatialGeo/llava/eval/model_vqa_mmbench.py in the reference repo).
CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."
# LLaVA-1.5's short-answer instruction (same repo, MME/convert_answer_to_mme.py and the POPE question file).
JUDGMENT_SUFFIX = "Answer the question using a single word or phrase."


@dataclass
class BenchItem:
    """One question of a benchmark, ready to be asked (by either protocol) and scored."""

    question_id: str
    image: str  # the first image, relative to the image root
    prompt: str  # sgeo protocol: question + answer-format instruction, without "<image>"
    gt: str
    qa_info: dict[str, Any]  # category, type, (subcategory, source, ...)
    options: list[str] | None = None  # multiple-choice option texts, in letter order
    extra: dict[str, Any] = field(default_factory=dict)  # question, bbox, images, ...: kept in the answers
    images: list[str] = field(default_factory=list)  # every image of the item (default: [image])
    # The question exactly as the benchmark ships it, for the reference protocol: SpatialRGPT-Bench's human
    # turn (with its "<image>"), SpatialScore's `question`.
    raw_question: str | None = None

    def __post_init__(self) -> None:
        if not self.images:
            self.images = [self.image]

    def to_record(self, pred: str) -> dict[str, Any]:
        """The answers.jsonl line for this item: what `scoring.score_item` reads, plus `extra`."""
        record = {**self.extra, "question_id": self.question_id, "image": self.image, "pred": pred}
        record.update(gt=self.gt, qa_info=self.qa_info)
        if self.options is not None:
            record["options"] = self.options
        return record


def clean(text: str) -> str:
    """Text without "<image>", on one line with single spaces."""
    text = text.replace(IMAGE_TOKEN, " ")
    return re.sub(r"\s+", " ", text).strip()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The items of a JSON list or of a JSONL file."""
    if not path.is_file():
        raise SgeoError(f"benchmark file not found: {path}")
    # not UTF-8, or nested too deeply for the parser (as a whole or on one line): one line naming the file
    text = read_text(
        path, "benchmark file ", fix="pass the benchmark file as its authors ship it (UTF-8 JSON)"
    )
    try:
        data = loads(text, str(path))
    except json.JSONDecodeError:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        try:
            data = [loads(line, f"{path} line {n}") for n, line in lines]
        except json.JSONDecodeError as e:
            raise SgeoError(f"{path} is neither JSON nor JSONL: {e}") from None
    if isinstance(data, dict):  # JSONL with a single line
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise SgeoError(f"{path}: expected a list of JSON objects")
    if not data:
        raise SgeoError(f"{path} holds no items")
    return data


def choice_listing(options: list[str]) -> str:
    """Options as sgeo's prompts list them: "A. first\nB. second"."""
    return "\n".join(f"{'ABCDEFGHIJ'[k]}. {option}" for k, option in enumerate(options))


def sgeo_choice_prompt(question: str, options: list[str]) -> str:
    """sgeo's multiple-choice prompt: the question, its options as "A. ..." lines, LLaVA-1.5's instruction."""
    return f"{question}\n{choice_listing(options)}\n{CHOICE_SUFFIX}"
