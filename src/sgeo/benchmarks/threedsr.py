"""3DSRBench (3D spatial reasoning: height, location, orientation, multi-object), in the layout the standard
harness reads: lmms-eval's tasks/3dsrbench (its `3dsr` and `3dsr_circular` configurations of the authors' data,
in VLMEvalKit's format): parquet with index (the item's id), question, A, B, C, D (an empty option is null or
"nan"), answer (the letter), category (the detailed one, e.g. "orientation_viewpoint"), image (embedded) and,
in the circular file, qid ("VIN6MS3J", "VIN6MS3J-1", "VIN6MS3J-flip", ...). `--data` is a parquet file or a
folder of them.

reference protocol: lmms-eval's `doc_to_text`: "Question: {question}\\nOptions:\\nA. ...\\n" + "Please select
the correct answer from the options above. \\n", after the image, in LLaVA-1.5's vicuna_v1 template, greedy
(temperature 0), 4096 new tokens (its generation_kwargs). One difference: sgeo's template renderer strips a
turn's surrounding white space, so the post-prompt's trailing " \n" is not sent. Scoring: `scoring.threedsr`.

The authors' own form (ccvl/3DSRBench on the Hub), told apart by its suffix: `3dsrbench_v1_vlmevalkit_circular.tsv`
(the file their README says reproduces their results; or `3dsrbench_v1_vlmevalkit.tsv`), VLMEvalKit's TSV:
index, qid, question, A, B, C, D (an absent option is an empty cell), answer, category, image (the image file
in base64), image_source, image_url. Empty cells and the other strings pandas reads as missing ("nan", "None",
"NA", ...) are no option, as VLMEvalKit's `pd.read_csv` makes them. `--data` is the TSV or the downloaded
dataset folder (its circular TSV is taken when present). The authors ran it through VLMEvalKit, so the
reference protocol is VLMEvalKit's LLaVA (`vlmeval/vlm/llava/llava.py`, January 2025): the question, "\\nA. ..."
per option, "\\nAnswer with the option's letter from the given choices directly.", after the image, in its own
template ("A chat between a curious human and ...", "USER: ... ASSISTANT:"; it writes " <image> " before the
question, sgeo's renderer "<image>\\n" as LLaVA's training turns do), greedy. It stops at 512 new
tokens; the reference decoding here is lmms-eval's 4096 for both forms, the same answer unless it runs past
512. Scored as their `compute_3drbench_results_circular.py` (`scoring.threedsr`).
"""

from __future__ import annotations

import base64
import binascii
import csv
import math
import sys
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.model.conversation import image_turn
from sgeo.scoring.threedsr import AUTHORS_FORM, CATEGORY_MAPPING, score_threedsr, threedsr_summary

from .common import BenchItem, clean, sgeo_choice_prompt
from .protocols import Prompt, greedy_protocols, shown_images, verbatim_prompt
from .published import check_columns, data_files, read_parquet, unpack_image, unpack_root, unpacked_images
from .registry import Benchmark

LAYOUT = "3DSRBench's test parquet as lmms-eval reads it (index, question, A-D, answer, category, image)"
COLUMNS = ("index", "question", "A", "B", "C", "D", "answer", "category", "image")
POST_PROMPT = "Please select the correct answer from the options above. \n"


def _option(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return None if isinstance(value, str) and value.lower() == "nan" else str(value)


# The authors' form: their file names and VLMEvalKit's TSV columns (as in the circular file on the Hub)
TSV_FILES = ("3dsrbench_v1_vlmevalkit_circular.tsv", "3dsrbench_v1_vlmevalkit.tsv")
TSV_LAYOUT = "3DSRBench's 3dsrbench_v1_vlmevalkit_circular.tsv (ccvl/3DSRBench)"
TSV_COLUMNS = ("index", "qid", "question", "A", "B", "C", "D", "answer", "category", "image")
# pandas.read_csv's default missing-value strings: VLMEvalKit reads the TSV with pandas, so these are no option
_PANDAS_NA = frozenset(
    [
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
) | {""}
# VLMEvalKit's LLaVA (`vlmeval/vlm/llava/llava.py`): its system prompt and its multiple-choice instruction
VLMEVALKIT_LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
VLMEVALKIT_MCQ_SUFFIX = "Answer with the option's letter from the given choices directly."


def locate_threedsr(data: Path) -> Path:
    """The authors' TSV when `data` is a folder holding one (their Hub folder also holds a 135 kB parquet of
    annotations without images, not lmms-eval's file); otherwise `data` as given."""
    data = Path(data)
    if data.is_dir():
        for name in TSV_FILES:
            if (data / name).is_file():
                return data / name
    return data


def _tsv_rows(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)  # a row holds its image in base64
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            check_columns(path, reader.fieldnames or (), TSV_COLUMNS, TSV_LAYOUT)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise SgeoError(f"{path} is not a readable TSV ({e}); pass {TSV_LAYOUT} as published") from None
    if not rows:
        raise SgeoError(f"{path} holds no items")
    return rows


def _load_tsv(path: Path) -> list[BenchItem]:
    items = []
    root = unpack_root("3dsrbench", path)
    for row in _tsv_rows(path):
        qid, index = row["qid"], row["index"]
        choices = {k: row[k] for k in "ABCD" if (row.get(k) or "") not in _PANDAS_NA}
        if row["answer"] not in choices:
            raise SgeoError(f"{path} index {index}: answer {row['answer']!r} is not one of its options")
        if row["category"] not in CATEGORY_MAPPING:  # their script asserts the same
            raise SgeoError(
                f"{path} index {index}: category {row['category']!r} is none of 3DSRBench's 12 "
                f"({', '.join(CATEGORY_MAPPING)})"
            )
        try:
            data = base64.b64decode(row["image"], validate=True)
        except (binascii.Error, ValueError):
            data = b""
        image = unpack_image(root, index, data)
        if image is None:
            raise SgeoError(f"{path} index {index} has no base64 image; pass {TSV_LAYOUT} as published")
        question = clean(row["question"])
        listing = "".join(f"\n{k}. {v}" for k, v in choices.items())
        items.append(
            BenchItem(
                question_id=index,
                image=image,
                prompt=sgeo_choice_prompt(question, list(choices.values())),
                gt=row["answer"],
                qa_info={"type": CATEGORY_MAPPING[row["category"]], "category": row["category"]},
                options=list(choices.values()),
                extra={"question": question, "qid": qid, "form": AUTHORS_FORM, "choices": choices},
                raw_question=f"{row['question']}{listing}\n{VLMEVALKIT_MCQ_SUFFIX}",
            )
        )
    return items


def load_threedsr(located: Path) -> list[BenchItem]:
    if Path(located).suffix == ".tsv":
        return _load_tsv(Path(located))
    items = []
    root = unpack_root("3dsrbench", located)
    for path in data_files(located, ("*.parquet", "*/*.parquet"), LAYOUT):
        for row in read_parquet(path, COLUMNS, LAYOUT):
            qid = str(row["index"])
            options = {letter: o for letter in "ABCD" if (o := _option(row[letter])) is not None}
            if str(row["answer"]) not in options:
                raise SgeoError(f"{path} index {qid}: answer {row['answer']!r} is not one of its options")
            image = unpack_image(root, qid, row["image"])
            if image is None:
                raise SgeoError(f"{path} index {qid} has no image bytes; pass {LAYOUT} as published")
            category = str(row["category"])
            question = clean(str(row["question"]))
            listing = "".join(f"{letter}. {text}\n" for letter, text in options.items())
            items.append(
                BenchItem(
                    question_id=qid,
                    image=image,
                    prompt=sgeo_choice_prompt(question, list(options.values())),
                    gt=str(row["answer"]),
                    qa_info={"type": CATEGORY_MAPPING.get(category, "other"), "category": category},
                    options=list(options.values()),
                    extra={"question": question, **({"qid": str(row["qid"])} if row.get("qid") else {})},
                    raw_question=f"Question: {row['question']}\nOptions:\n{listing}{POST_PROMPT}",
                )
            )
    return items


def threedsr_prompt(item: BenchItem, protocol: str, multi_image: str, format_hint: bool) -> Prompt:
    """lmms-eval's form: its question as it is; the authors' TSV: VLMEvalKit's LLaVA (its system prompt, the
    image then the question)."""
    if protocol == "reference" and item.extra.get("form") == AUTHORS_FORM:
        images, n, tile = shown_images(item, multi_image)
        return Prompt(VLMEVALKIT_LLAVA_SYSTEM, image_turn(item.raw_question or "", n), images, tile)
    return verbatim_prompt(item, protocol, multi_image, format_hint)


BENCHMARK = Benchmark(
    name="3dsrbench",
    title="3DSRBench",
    loader=load_threedsr,
    prompt=threedsr_prompt,
    decoding=greedy_protocols(4096),
    locate=locate_threedsr,
    scorer=score_threedsr,
    image_root=unpacked_images("3dsrbench"),
    summary=threedsr_summary,
    version="3DSRBench v1: the authors' VLMEvalKit TSV, or lmms-eval's 3dsr / 3dsr_circular parquet",
    files="3dsrbench_v1_vlmevalkit_circular.tsv (index, qid, question, A-D, answer, category, image base64); "
    "or lmms-eval's parquet (index, question, A-D, answer, category, image; qid: circular)",
    scoring="TSV: VLMEvalKit exact matching, the authors' circular groups (flip apart), per main and detailed "
    "category; parquet: lmms-eval's letter reading, vanilla / flip / circular / flip+circular accuracy",
)
