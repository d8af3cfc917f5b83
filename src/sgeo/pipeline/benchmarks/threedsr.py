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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.pipeline.scoring.threedsr import CATEGORY_MAPPING, score_threedsr, threedsr_summary

from .common import BenchItem, clean, sgeo_choice_prompt
from .protocols import GREEDY_SGEO, Decoding, verbatim_prompt
from .published import data_files, read_parquet, unpack_image, unpack_root
from .registry import Benchmark

LAYOUT = "3DSRBench's test parquet as lmms-eval reads it (index, question, A-D, answer, category, image)"
COLUMNS = ("index", "question", "A", "B", "C", "D", "answer", "category", "image")
POST_PROMPT = "Please select the correct answer from the options above. \n"


def _option(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return None if isinstance(value, str) and value.lower() == "nan" else str(value)


def load_threedsr(located: Path) -> list[BenchItem]:
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


BENCHMARK = Benchmark(
    name="3dsrbench",
    title="3DSRBench",
    loader=load_threedsr,
    prompt=verbatim_prompt,
    decoding={"reference": Decoding(max_new_tokens=4096), "sgeo": GREEDY_SGEO},
    scorer=score_threedsr,
    image_root=lambda located: unpack_root("3dsrbench", located),
    summary=threedsr_summary,
    version="3DSRBench v1 (lmms-eval's 3dsr / 3dsr_circular test parquet)",
    files="parquet with index, question, A-D, answer, category, image (and qid: circular)",
    scoring="lmms-eval's letter reading; vanilla, flip, circular and flip+circular accuracy; per category",
)
