"""Spatial VQA benchmark files -> `BenchItem`s: SpatialRGPT-Bench, SpatialScore and our synthetic bench.

Each loader is registered by name in `LOADERS`; `load_benchmark` looks one up and raises `SgeoError`
listing the known names otherwise. Items carry the prompt text without `<image>` (the caller adds the
image token), the ground truth, and everything the scorer needs (`qa_info`, `options`, `extra`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.pipeline.scoring import CHOICE_LETTERS, MULTIPLE_CHOICE_TYPES, parse_choice

# Answer-format instructions of the reference SpatialGeo eval, verbatim (typo "feets" included, since the
# released model was evaluated with them). Source: github.com/Ricky-PLUS/SpatialGeo,
# SpatialGeo/llava/eval/benchmark/eval_spatial.py, where they are appended to the system prompt; we append
# them to the question instead. Direction is tested before type: direction items have type "quantitative".
DIRECTION_SUFFIX = (
    "The answer should be presented in this format {# o'clock}, for example, {3 o'clock} or {12 o'clock}."
)
QUANTITATIVE_SUFFIX = (
    "The answer should be presented in this format {# meters or feets or inches}, "
    "for example, {1.23 meters} or {0.56 feets} or {0.65 inches}."
)
QUALITATIVE_SUFFIX = (
    "The answer should be presented in this format {# big or small or behind or front or left or right "
    "or tall or short or wide or thin or below or above}, for example,{A is bigger than B}."
)
# LLaVA-1.5's multiple-choice instruction (SpatialGeo/llava/eval/model_vqa_mmbench.py in the same repo).
CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."
# SpatialScore "judgment" items; LLaVA-1.5's short-answer instruction (same repo, MME/convert_answer_to_mme.py).
JUDGMENT_SUFFIX = "Answer the question using a single word or phrase."


@dataclass
class BenchItem:
    """One question of a benchmark, ready to be asked and scored."""

    question_id: str
    image: str  # path relative to the image root
    prompt: str  # question + answer-format instruction, without "<image>"
    gt: str
    qa_info: dict[str, Any]  # category, type, ...
    options: list[str] | None = None  # multiple-choice option texts, in letter order
    extra: dict[str, Any] = field(default_factory=dict)  # question, bbox, rle, ...: kept in the answers

    def to_record(self, pred: str) -> dict[str, Any]:
        """The answers.jsonl line for this item: what `scoring.score_item` reads, plus `extra`."""
        record = {**self.extra, "question_id": self.question_id, "image": self.image, "pred": pred}
        record.update(gt=self.gt, qa_info=self.qa_info)
        if self.options is not None:
            record["options"] = self.options
        return record


def answer_suffix(qa_info: dict[str, Any]) -> str:
    """The reference's answer-format instruction for a SpatialRGPT-Bench item."""
    if qa_info.get("category") == "direction":
        return DIRECTION_SUFFIX
    if qa_info.get("type") == "quantitative":
        return QUANTITATIVE_SUFFIX
    return QUALITATIVE_SUFFIX


# "<mask>", "<mask> <depth>" (SpatialRGPT's region + depth tokens) and "<region0>"-style placeholders.
_PLACEHOLDER = re.compile(r"<mask>(?:\s*<depth>)?|<region\s*\d*>", re.IGNORECASE)


def _clean(text: str) -> str:
    text = text.replace("<image>", " ")
    return re.sub(r"\s+", " ", text).strip()


def _question_text(row: dict[str, Any], human: str | None) -> str:
    """The question a model without region input sees.

    The reference SpatialGeo eval feeds the human turn of `conversations` verbatim, ignoring bbox/rle (its
    converted bench names the objects there). The original SpatialRGPT-Bench human turn holds "<mask>"
    placeholders instead, and `text_q` is the same question with each placeholder written "Region [i]".
    So: the human turn when it has no placeholders, `text_q` otherwise, and as a last resort the human
    turn with its placeholders numbered the way `text_q` numbers them.
    """
    if human is not None and not _PLACEHOLDER.search(human):
        return _clean(human)
    if isinstance(row.get("text_q"), str) and row["text_q"].strip():
        return _clean(_PLACEHOLDER.sub("", row["text_q"]))
    if human is None:
        raise SgeoError("has neither text_q nor a human turn in conversations")
    counter = itertools.count()
    return _clean(_PLACEHOLDER.sub(lambda _: f"Region [{next(counter)}]", human))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The items of a JSON list or of a JSONL file."""
    if not path.is_file():
        raise SgeoError(f"benchmark file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise SgeoError(f"{path} is neither JSON nor JSONL: {e}") from None
    if isinstance(data, dict):  # JSONL with a single line
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise SgeoError(f"{path}: expected a list of JSON objects")
    if not data:
        raise SgeoError(f"{path} holds no items")
    return data


def _human_gpt(conversations: Any) -> tuple[str | None, str | None]:
    """First human turn and the gpt turn that answers it (the bench has one pair per item)."""
    human = gpt = None
    for turn in conversations if isinstance(conversations, list) else []:
        who, value = (turn.get("from"), turn.get("value")) if isinstance(turn, dict) else (None, None)
        if who == "human" and human is None:
            human = value
        elif who == "gpt" and human is not None:
            gpt = value
            break
    return human, gpt


def _load_spatialrgpt(path: Path) -> list[BenchItem]:
    items = []
    for i, row in enumerate(_read_rows(path)):
        where = f"{path} item {i} (id {row.get('id', '?')})"
        try:
            image = row.get("file_path") or (row.get("image_info") or {}).get("file_path")
            if not image:
                raise SgeoError("has no file_path nor image_info.file_path")
            qa_info = row.get("qa_info")
            if not isinstance(qa_info, dict) or "category" not in qa_info or "type" not in qa_info:
                raise SgeoError("needs qa_info with category and type")
            human, gt = _human_gpt(row.get("conversations"))
            if gt is None:
                raise SgeoError("has no gpt turn in conversations")
            question = _question_text(row, human)
        except SgeoError as e:
            raise SgeoError(f"{where} {e}") from None
        extra: dict[str, Any] = {"question": question}
        for key in ("bbox", "rle", "image_info"):
            if key in row:
                extra[key] = row[key]
        items.append(
            BenchItem(
                question_id=str(row.get("id", i)),
                image=str(image),
                prompt=f"{question}\n{answer_suffix(qa_info)}",
                gt=str(gt).strip(),
                qa_info=dict(qa_info),
                options=None,
                extra=extra,
            )
        )
    return items


# SpatialScore embeds options in the question: "(A) left (B) right" or "A. left\nB. right".
_EMBEDDED_OPTION = re.compile(r"(?:^|\s)(?:\(([A-J])\)|([A-J])[.:)])\s+")


def _split_embedded_options(question: str) -> tuple[str, list[str] | None]:
    marks = list(_EMBEDDED_OPTION.finditer(question))
    # Keep the first run of consecutive letters starting at A.
    run: list[re.Match[str]] = []
    for m in marks:
        letter = m.group(1) or m.group(2)
        if len(run) < len(CHOICE_LETTERS) and letter == CHOICE_LETTERS[len(run)]:
            run.append(m)
        elif letter == "A":
            run = [m]
    if len(run) < 2:
        return question, None
    options = []
    for k, m in enumerate(run):
        end = run[k + 1].start() if k + 1 < len(run) else len(question)
        options.append(question[m.end() : end].strip().rstrip(",;").strip())
    stem = question[: run[0].start()].strip()
    stem = re.sub(r"(?:options|choices)\s*:?\s*$", "", stem, flags=re.IGNORECASE).strip()
    return stem, options


def _options_field(row: dict[str, Any]) -> list[str] | None:
    raw = row.get("options", row.get("choices"))
    if raw is None:
        return None
    if isinstance(raw, dict):
        return [str(raw[k]) for k in sorted(raw)]
    if isinstance(raw, list):
        # Strip "A. " / "(A) " prefixes some files put in the option texts.
        return [re.sub(r"^\s*\(?[A-J][.:)]\s*", "", str(o)).strip() for o in raw]
    raise SgeoError(f"options must be a list or a dict, got {type(raw).__name__}")


def _load_spatialscore(path: Path) -> list[BenchItem]:
    """SpatialScore (github.com/haoningwu3639/SpatialScore, version_0/test_qwen.py field names):
    id, question, answer, img_paths, question_type ("multi-choice" | "judgment" | "open-ended"),
    category, subcategory, source. Options come from an `options`/`choices` field or from the question."""
    items = []
    for i, row in enumerate(_read_rows(path)):
        where = f"{path} item {i} (id {row.get('id', '?')})"
        try:
            images = row.get("img_paths") or row.get("images") or row.get("image") or row.get("image_path")
            if isinstance(images, str):
                images = [images]
            if not images:
                raise SgeoError("has no img_paths")
            if "question" not in row or "answer" not in row:
                raise SgeoError("needs question and answer")
            question = _clean(str(row["question"]))
            qtype = str(row.get("question_type") or "").lower()
            options = _options_field(row)
            if options is None and qtype in ("", *MULTIPLE_CHOICE_TYPES):
                question, options = _split_embedded_options(question)
            if qtype in MULTIPLE_CHOICE_TYPES or (not qtype and options):
                qtype = "multi-choice"
            gt = str(row["answer"]).strip()
            if qtype == "multi-choice":
                if not options:
                    raise SgeoError("is multi-choice but has no options")
                letter = parse_choice(gt, options)
                if letter is None:
                    raise SgeoError(f"answer {gt!r} names none of its {len(options)} options")
                gt = letter
        except SgeoError as e:
            raise SgeoError(f"{where} {e}") from None
        if qtype == "multi-choice":
            listing = "\n".join(f"{CHOICE_LETTERS[k]}. {o}" for k, o in enumerate(options or []))
            prompt = f"{question}\n{listing}\n{CHOICE_SUFFIX}"
        elif qtype == "judgment":
            prompt = f"{question}\n{JUDGMENT_SUFFIX}"
        else:
            prompt = question
        qa_info = {"type": qtype or "open-ended", "category": str(row.get("category", "unknown"))}
        for key in ("subcategory", "source", "input_modality"):
            if key in row:
                qa_info[key] = row[key]
        extra: dict[str, Any] = {"question": question}
        if len(images) > 1:
            extra["images"] = list(images)
        items.append(
            BenchItem(
                question_id=str(row.get("id", i)),
                image=str(images[0]),
                prompt=prompt,
                gt=gt,
                qa_info=qa_info,
                options=options if qtype == "multi-choice" else None,
                extra=extra,
            )
        )
    return items


LOADERS: dict[str, Callable[[Path], list[BenchItem]]] = {
    "spatialrgpt": _load_spatialrgpt,
    "spatialscore": _load_spatialscore,
    # our generator writes eval/bench.json in the SpatialRGPT-Bench format, images relative to its folder
    "synthetic": _load_spatialrgpt,
}


def check_bench(bench: str) -> str:
    """Return `bench` if it names a known benchmark, else raise listing the known ones."""
    if bench not in LOADERS:
        raise SgeoError(f"unknown benchmark {bench!r}; known: {', '.join(sorted(LOADERS))}")
    return bench


def bench_file(bench: str, data: Path) -> Path:
    """The benchmark file `data` names: itself or, for `synthetic`, a folder's bench.json or eval/bench.json."""
    data = Path(data)
    if bench == "synthetic" and data.is_dir():
        for candidate in (data / "bench.json", data / "eval" / "bench.json"):
            if candidate.is_file():
                return candidate
        raise SgeoError(f"no bench.json in {data} nor in {data / 'eval'}")
    return data


def load_benchmark(bench: str, data: Path) -> list[BenchItem]:
    """Read benchmark `bench` from file `data` (for `synthetic`, also the folder holding eval/bench.json)."""
    return LOADERS[check_bench(bench)](bench_file(bench, data))


def image_root(bench: str, data: Path) -> Path:
    """Default folder that `BenchItem.image` is relative to: the benchmark file's folder."""
    return bench_file(check_bench(bench), data).parent
