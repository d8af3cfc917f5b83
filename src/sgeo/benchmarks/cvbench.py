"""CV-Bench (Cambrian-1's vision-centric benchmark, `nyu-visionx/CV-Bench` on the Hub) as published.

Files (its dataset card): test_2d.parquet (2D: Count and Relation questions on ADE20K and COCO images) and
test_3d.parquet (3D: Depth and Distance on Omni3D), earlier one test.parquet holding both; the same rows
without images as test_2d.jsonl / test_3d.jsonl / test.jsonl beside img/ (build_img.py writes it). Columns:
idx (the global index: the item's id), type ("2D" | "3D"), task, image (the encoded file, the `datasets`
Image struct), question, choices, answer ("(C)"), prompt (the question, " Select from the following
choices." and "(A) ..." lines), filename ("img/2D/count/ade20k_10.png"), source (ADE20K | COCO | Omni3D),
source_dataset, source_filename, target_class, target_size, bbox. `--data` is one of these files or the
folder holding them (both parquet files, else test.parquet, else the JSONL files).

reference protocol: Cambrian's own evaluation of a LLaVA-1.5-class model (github.com/cambrian-mllm/cambrian,
eval/eval/ade/ade_eval.py `process`, written for CV-Bench's ADE20K questions): "<image>\\n" + prompt +
"\\nAnswer with the option's letter from the given choices directly." in the vicuna_v1 template, greedy
(--temperature 0), 512 new tokens (--max_new_tokens). Scoring: `scoring.cvbench`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.scoring.cvbench import cvbench_summary, score_cvbench

from .common import CHOICE_SUFFIX, BenchItem, clean, read_rows, sgeo_choice_prompt
from .protocols import greedy_protocols, suffix_prompt
from .published import (
    check_columns,
    data_files,
    files_or_unpacked,
    read_parquet,
    unpack_image,
    unpack_root,
)
from .registry import Benchmark

LAYOUT = "CV-Bench's test_2d.parquet / test_3d.parquet (nyu-visionx/CV-Bench)"
COLUMNS = ("idx", "type", "task", "question", "choices", "answer", "prompt", "source")
_FILES = ("test_[23]d.parquet", "test.parquet", "test_[23]d.jsonl", "test.jsonl")


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        return read_parquet(path, (*COLUMNS, "image"), LAYOUT)
    rows = read_rows(path)
    have = set().union(*(row.keys() for row in rows))
    check_columns(path, have, (*COLUMNS, "filename"), "CV-Bench's test_2d.jsonl / test_3d.jsonl")
    return rows


def load_cvbench(located: Path) -> list[BenchItem]:
    items = []
    root = unpack_root("cv-bench", located)
    for path in data_files(located, _FILES, LAYOUT):
        for row in _rows(path):
            qid = str(row["idx"])
            choices = row["choices"]
            if isinstance(choices, str):  # a JSONL written by pandas may hold the list as JSON text
                choices = json.loads(choices)
            if not isinstance(choices, list) or not choices:
                raise SgeoError(f"{path} item idx {qid}: choices must be a non-empty list, got {choices!r}")
            if path.suffix == ".parquet":
                image = unpack_image(root, str(row.get("filename") or qid), row.get("image"))
                if image is None:
                    raise SgeoError(f"{path} item idx {qid} has no image bytes; pass {LAYOUT} as published")
            else:
                image = str(row["filename"])
            question = clean(str(row["question"]))
            items.append(
                BenchItem(
                    question_id=qid,
                    image=image,
                    prompt=sgeo_choice_prompt(question, [str(c) for c in choices]),
                    gt=str(row["answer"]),
                    qa_info={
                        "type": str(row["type"]),
                        "category": str(row["task"]),
                        "source": str(row["source"]),
                    },
                    options=[str(c) for c in choices],
                    extra={
                        "question": question,
                        **{
                            k: row[k] for k in ("filename", "source_dataset", "source_filename") if row.get(k)
                        },
                    },
                    raw_question=str(row["prompt"]),
                )
            )
    return items


BENCHMARK = Benchmark(
    name="cv-bench",
    title="CV-Bench",
    loader=load_cvbench,
    prompt=suffix_prompt(CHOICE_SUFFIX),
    decoding=greedy_protocols(512),
    scorer=score_cvbench,
    image_root=files_or_unpacked("cv-bench"),
    summary=cvbench_summary,
    version="nyu-visionx/CV-Bench (2,638 questions: 2D ADE20K / COCO, 3D Omni3D)",
    files="test_2d.parquet + test_3d.parquet (or test.parquet; or the .jsonl files beside img/)",
    scoring="lmms-eval's letter reading; accuracy per source and task; ((ADE20K + COCO) / 2 + Omni3D) / 2",
)
