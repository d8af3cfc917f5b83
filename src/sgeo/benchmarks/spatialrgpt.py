"""SpatialRGPT-Bench (and our synthetic bench, written in its format) -> `BenchItem`s.

Rows: {"id", "file_path" | "image_info": {"file_path"}, "text_q", "qa_info": {"type", "category"},
"conversations": [human, gpt], "bbox", "rle"}. The reference protocol asks the human turn verbatim with the
answer-format hint in the system prompt; the sgeo protocol asks `BenchItem.prompt` (question + hint).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.model.conversation import TEMPLATES, image_turn
from sgeo.scoring import judge_record, score_item

from .common import BenchItem, clean, read_rows
from .protocols import GREEDY_SGEO, IMAGE, Decoding, Prompt, sgeo_text
from .registry import Benchmark

# Answer-format instructions of the reference SpatialGeo eval, verbatim (typo "feets" included, since the
# released model was evaluated with them). Source: github.com/Ricky-PLUS/SpatialGeo,
# SpatialGeo/llava/eval/benchmark/eval_spatial.py `eval_model`, which appends them to the system prompt
# (--protocol reference); --protocol sgeo appends them to the question instead. Direction is tested before
# type: direction items have type "quantitative".
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
# The system prompt of LLaVA's `conv_llava_v1`, which eval_spatial.py's default `--conv-mode llava_v1` picks
# (SpatialGeo/llava/conversation.py); the hint is glued to it without a space, as `conv.system + ...` does.
LLAVA_V1_SYSTEM = TEMPLATES["llava_v1"].system


def answer_suffix(qa_info: dict[str, Any]) -> str:
    """The reference's answer-format instruction for a SpatialRGPT-Bench item."""
    if qa_info.get("category") == "direction":
        return DIRECTION_SUFFIX
    if qa_info.get("type") == "quantitative":
        return QUANTITATIVE_SUFFIX
    return QUALITATIVE_SUFFIX


# "<mask>", "<mask> <depth>" (SpatialRGPT's region + depth tokens) and "<region0>"-style placeholders.
_PLACEHOLDER = re.compile(r"<mask>(?:\s*<depth>)?|<region\s*\d*>", re.IGNORECASE)


def _question_text(row: dict[str, Any], human: str | None) -> str:
    """The question a model without region input sees (sgeo protocol).

    The reference SpatialGeo eval feeds the human turn of `conversations` verbatim, ignoring bbox/rle (its
    converted bench names the objects there). The original SpatialRGPT-Bench human turn holds "<mask>"
    placeholders instead, and `text_q` is the same question with each placeholder written "Region [i]".
    So: the human turn when it has no placeholders, `text_q` otherwise, and as a last resort the human
    turn with its placeholders numbered the way `text_q` numbers them.
    """
    if human is not None and not _PLACEHOLDER.search(human):
        return clean(human)
    if isinstance(row.get("text_q"), str) and row["text_q"].strip():
        return clean(_PLACEHOLDER.sub("", row["text_q"]))
    if human is None:
        raise SgeoError("has neither text_q nor a human turn in conversations")
    counter = itertools.count()
    return clean(_PLACEHOLDER.sub(lambda _: f"Region [{next(counter)}]", human))


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


def load_spatialrgpt(path: Path) -> list[BenchItem]:
    items = []
    for i, row in enumerate(read_rows(path)):
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
        if isinstance(row.get("text_q"), str):
            extra["text_q"] = row["text_q"]  # what the reference's answers file calls "question"
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
                raw_question=human,
            )
        )
    return items


def spatialrgpt_prompt(item: BenchItem, protocol: str, multi_image: str, format_hint: bool) -> Prompt:
    """sgeo: the question and its hint after the image. reference: eval_spatial.py's llava_v1 system prompt
    with the hint glued on, the human turn verbatim."""
    if protocol == "sgeo":
        return Prompt(None, image_turn(sgeo_text(item, format_hint)), (item.image,))
    human = item.raw_question if item.raw_question is not None else image_turn(sgeo_text(item, format_hint))
    n = human.count(IMAGE)
    if n > 1:
        raise SgeoError(f"item {item.question_id}: its human turn has {n} {IMAGE} but the item one image")
    # A human turn without "<image>" gets no image, as in the reference (LLaVA drops an image it has no
    # token for); the eval says how many such items there are.
    return Prompt(LLAVA_V1_SYSTEM + answer_suffix(item.qa_info), human, (item.image,) * n)


# eval_spatial.py: --temperature 0.2, --top_p None (so transformers' top_k 50 stays), max_new_tokens=128
REFERENCE_DECODING = Decoding(sample=True, temperature=0.2, top_k=50, max_new_tokens=128)

BENCHMARK = Benchmark(
    name="spatialrgpt",
    title="SpatialRGPT-Bench",
    loader=load_spatialrgpt,
    prompt=spatialrgpt_prompt,
    decoding={"reference": REFERENCE_DECODING, "sgeo": GREEDY_SGEO},
    scorer=score_item,
    judge=judge_record,
    version="SpatialRGPT-Bench (SpatialGeo's converted file or the original with <mask> regions)",
    files="a JSON / JSONL list of {id, file_path | image_info, qa_info, conversations}",
    scoring="sgeo's rules (SpatialRGPT's decisions); --judge: SpatialRGPT's GPT-4 prompts",
)
