"""SpatialScore (github.com/haoningwu3639/SpatialScore) files, as shipped, -> `BenchItem`s.

Rows of `SpatialScore.json` / `SpatialScore-Hard.json`: {"index", "category", "subcategory",
"question_type" ("multi-choice" | "open-ended" | "judgment"), "input_modality", "question" (the options
written into it), "answer" ("B", "(D)", "(a)", "Yes", "3", "1.72 meters"), "img_paths" (a list),
"source", "index_origin", "category_origin"}. `index` is the question id. The answer is kept as shipped:
SpatialScore's scorer reads it with the same rules as the prediction (`scoring.spatialscore`).

Options are read from the question only for the sgeo protocol, which lists them again under the question;
every style of the shipped files is read ("(A) x\\n(B) y", "(a) x (b) y", "A. x\\nB. y", "A: x",
"Options: A. x, B. y"), and text after the last option ("... Please answer directly ...") stays out of it.
A row whose options cannot be read is still loaded (its question is then asked as written).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.model.conversation import image_turn
from sgeo.scoring import CHOICE_LETTERS, score_spatialscore

from .common import CHOICE_SUFFIX, JUDGMENT_SUFFIX, BenchItem, clean, read_rows
from .protocols import Prompt, greedy_protocols, sgeo_text, shown_images
from .registry import Benchmark

# The instruction SpatialScore gives before each question, by source: version_0/test_all-in-one.py
# `process_model_input` (the `assistant_prompt`), verbatim; their code refuses any other source.
_MC = (
    "**Please select the most appropriate answer from options (A), (B), (C), (D), (E), or (F).**\n"
    "**Respond ONLY with the letter and its parentheses, for example: (A)**\n\nQuestion: "
)
_SHORT = (
    "**Answer concisely with a single word, number, or option (e.g., yes, no, 5, 2.2, A).**\n\nQuestion: "
)
_METRIC = (
    "You will be provided with a question and a 2D image. The question involves measuring the precise "
    "distance in 3D space through a 2D image. You will answer the question by providing a numeric answer "
    r"consisting of a scalar and a distance unit in the format of **\scalar{scalar} \distance_unit{distance "
    r"unit}** at the end of your response." + "\n"
    "Let's think step by step and start by finding good reference objects or object parts in the image.\n\n"
    "Question:"
)
SOURCE_INSTRUCTIONS: dict[str, str] = {
    **dict.fromkeys(("cvbench", "MMIU", "BLINK", "3DSRBench", "MMVP"), _MC),
    **dict.fromkeys(("spatialbench", "VSR-ZeroShot", "VSR-Random", "SpatialSense", "VSI-Bench_8"), _SHORT),
    "RealWorldQA": _SHORT,
    **dict.fromkeys(("QSpatialBench-Plus", "QSpatialBench-ScanNet"), _METRIC),
}


def source_instruction(source: Any, question_type: Any) -> str:
    """SpatialScore's instruction for a row (VGBench: the metric one for open-ended questions only)."""
    if source == "VGBench":
        return _METRIC if question_type == "open-ended" else _SHORT
    if source not in SOURCE_INSTRUCTIONS:
        known = ", ".join(sorted([*SOURCE_INSTRUCTIONS, "VGBench"]))
        raise SgeoError(
            f"source {source!r} has no instruction in SpatialScore's evaluation code (known: {known}); "
            "use --protocol sgeo"
        )
    return SOURCE_INSTRUCTIONS[source]


# An option mark: "(A)" / "(a)" / "A." / "A:" / "A)" at the start or after white space.
_MARK = re.compile(r"(?:^|(?<=\s))(?:\(([A-Ja-j])\)|([A-J])[.:)])(?=\s)")


def split_options(question: str) -> tuple[str, list[str] | None, str]:
    """(stem, options, after) of a question with its options written into it; options None if it has none.

    The options are the first run of marks A, B, C, ... (lower case only in parentheses); each runs to the
    next mark, the last one to the end of its line (to a blank line when blank lines part the options):
    what follows is `after`.
    """
    run: list[re.Match[str]] = []
    for m in _MARK.finditer(question):
        letter = m.group(1) or m.group(2)
        expected = CHOICE_LETTERS[len(run)] if len(run) < len(CHOICE_LETTERS) else None
        if run and expected is not None and letter == (expected.lower() if letter.islower() else expected):
            run.append(m)
        elif letter in ("A", "a"):
            if len(run) >= 2:
                break  # keep the first complete run
            run = [m]
    if len(run) < 2:
        return question.strip(), None, ""
    gaps = [question[m.end() : n.start()] for m, n in zip(run, run[1:], strict=False)]
    # Options set apart by blank lines may span lines (VGBench's matrices): the last then ends at a blank line.
    end = "\n\n" if all(gap.rstrip(" \t").endswith("\n\n") for gap in gaps) else "\n"
    text, cut, rest = question[run[-1].end() :].lstrip().partition(end)
    after = rest.strip() if cut else ""
    options = [" ".join(gap.split()).rstrip(",;").strip() for gap in [*gaps, text]]
    stem = question[: run[0].start()].strip()
    stem = re.sub(r"(?:options|choices)\s*:?\s*$", "", stem, flags=re.IGNORECASE).strip()
    return stem, options, after


def _options_field(row: dict[str, Any]) -> list[str] | None:
    """Options given as their own field (`options` / `choices`) by other versions of the files."""
    raw = row.get("options", row.get("choices"))
    if raw is None:
        return None
    if isinstance(raw, dict):
        return [str(raw[k]) for k in sorted(raw)]
    if isinstance(raw, list):
        return [re.sub(r"^\s*\(?[A-J][.:)]\s*", "", str(o)).strip() for o in raw]
    raise SgeoError(f"options must be a list or a dict, got {type(raw).__name__}")


def _sgeo_prompt(qtype: str, question: str, options: list[str] | None, after: str, stem: str) -> str:
    if qtype == "multi-choice" and options:
        listing = "\n".join(f"{CHOICE_LETTERS[k]}. {o}" for k, o in enumerate(options))
        return "\n".join(part for part in (stem, listing, after, CHOICE_SUFFIX) if part)
    if qtype == "multi-choice":
        return f"{question}\n{CHOICE_SUFFIX}"
    if qtype == "judgment":
        return f"{question}\n{JUDGMENT_SUFFIX}"
    return question


def load_spatialscore(path: Path) -> list[BenchItem]:
    items = []
    for i, row in enumerate(read_rows(path)):
        qid = row.get("index", row.get("id", i))
        try:
            images = row.get("img_paths") or row.get("images") or row.get("image") or row.get("image_path")
            images = [images] if isinstance(images, str) else images
            if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
                raise SgeoError("has no img_paths (a list of image paths)")
            if "question" not in row or "answer" not in row:
                raise SgeoError("needs question and answer")
            raw_question = str(row["question"])
            qtype = str(row.get("question_type") or "open-ended")
            options, stem, after = _options_field(row), clean(raw_question), ""
            if options is None and qtype.lower() == "multi-choice":
                stem, options, after = split_options(raw_question)
                stem, after = clean(stem), clean(after)
        except SgeoError as e:
            raise SgeoError(f"{path} item {i} (index {qid}) {e}") from None
        qa_info = {"type": qtype, "category": str(row.get("category", "unknown"))}
        for key in ("subcategory", "source", "input_modality"):
            if key in row:
                qa_info[key] = row[key]
        extra: dict[str, Any] = {"question": clean(raw_question), "images": list(images)}
        for key in ("index_origin", "category_origin"):
            if key in row:
                extra[key] = row[key]
        items.append(
            BenchItem(
                question_id=str(qid),
                image=images[0],
                prompt=_sgeo_prompt(qtype.lower(), clean(raw_question), options, after, stem),
                gt=str(row["answer"]),
                qa_info=qa_info,
                options=options if qtype.lower() == "multi-choice" else None,
                extra=extra,
                images=list(images),
                raw_question=raw_question,
            )
        )
    return items


def spatialscore_prompt(item: BenchItem, protocol: str, multi_image: str, format_hint: bool) -> Prompt:
    """reference: test_all-in-one.py's llava1_5-13b messages (the source's instruction as an assistant turn
    first, one image entry per image, the question as shipped); sgeo: the images, then `BenchItem.prompt`.
    Both upscale tiny images as their code does."""
    images, n, tile = shown_images(item, multi_image)
    if protocol == "sgeo":
        return Prompt(None, image_turn(sgeo_text(item, format_hint), n), images, tile, upscale_tiny=True)
    instruction = source_instruction(item.qa_info.get("source"), item.qa_info.get("type"))
    question = item.raw_question if item.raw_question is not None else sgeo_text(item, format_hint)
    return Prompt(f"ASSISTANT: {instruction}", image_turn(question, n), images, tile, True)


def spatialscore_image_root(located: Path) -> Path:
    """SpatialScore ships its files in `dataset/` with image paths "./dataset/..." relative to the folder
    holding it (where its scripts run), so for a file in a folder named `dataset` it is that folder's parent."""
    folder = Path(located).parent
    return folder.parent if folder.name == "dataset" else folder


BENCHMARK = Benchmark(
    name="spatialscore",
    title="SpatialScore",
    loader=load_spatialscore,
    prompt=spatialscore_prompt,
    # test_all-in-one.py `generate_response`: TEMPERATURE 0.0 (greedy), max_new_tokens 1024
    decoding=greedy_protocols(1024),
    scorer=score_spatialscore,
    image_root=spatialscore_image_root,
    multi_image=True,
    version="v1 (SpatialScore.json, SpatialScore-Hard.json; now version_0/ of the repository)",
    files="dataset/SpatialScore.json with images under dataset/",
    scoring="SpatialScore's test_all-in-one.py rules (options, yes/no, numbers, lengths, VSI-Bench MRA)",
)
