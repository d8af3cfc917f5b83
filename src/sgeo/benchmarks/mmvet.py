"""MM-Vet (integrated capabilities: recognition, OCR, knowledge, language generation, spatial awareness, math), as
its authors release it (mm-vet.zip): mm-vet/mm-vet.json, {"v1_0": {"imagename": "v1_0.png", "capability":
["ocr", "math"], "question", "answer"}, ...}, and mm-vet/images/. `--data` is that folder or mm-vet.json; the
item's id is its key ("v1_0"). Open-ended: only its GPT-4 grader scores it, so --judge is required.

reference protocol: LLaVA-1.5's (scripts/v1_5/eval/mmvet.sh; the SpatialGeo reference's llava/eval/mm-vet/mmvet.sh):
llava-mm-vet.jsonl asks each question as written through `model_vqa` ("<image>\\n" + question, vicuna_v1,
--temperature 0, max_new_tokens 1024). Scoring: `scoring.mmvet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sgeo.errors import SgeoError
from sgeo.pipeline.json_files import read_json
from sgeo.scoring.mmvet import mmvet_judge, mmvet_summary, score_mmvet

from .common import BenchItem, clean
from .protocols import greedy_protocols
from .registry import Benchmark

LAYOUT = "MM-Vet's mm-vet.json (a dict of {imagename, capability, question, answer}) beside images/"


def mmvet_json(data: Path) -> Path:
    data = Path(data)
    return data / "mm-vet.json" if data.is_dir() else data


def load_mmvet(path: Path) -> list[BenchItem]:
    if not path.is_file():
        raise SgeoError(f"benchmark file not found: {path} (pass the mm-vet folder or its mm-vet.json)")
    data: Any = read_json(path, "benchmark file ")
    if not isinstance(data, dict) or not data:
        raise SgeoError(f"{path}: expected a non-empty JSON object of questions keyed by id: not {LAYOUT}")
    items = []
    for qid, row in data.items():
        if not isinstance(row, dict) or not all(
            k in row for k in ("imagename", "capability", "question", "answer")
        ):
            raise SgeoError(
                f"{path} item {qid!r} lacks imagename, capability, question or answer: not {LAYOUT}"
            )
        caps = row["capability"] if isinstance(row["capability"], list) else [row["capability"]]
        question = str(row["question"])
        items.append(
            BenchItem(
                question_id=str(qid),
                image=f"images/{row['imagename']}",
                prompt=clean(question),
                gt=str(row["answer"]),
                # the capability integration (the exact set an item needs), as mm-vet_evaluator.py groups it
                qa_info={"type": "open-ended", "category": "_".join(sorted(str(c) for c in caps))},
                extra={"question": question, "capability": [str(c) for c in caps]},
                raw_question=question,
            )
        )
    return items


BENCHMARK = Benchmark(
    name="mm-vet",
    title="MM-Vet",
    loader=load_mmvet,
    decoding=greedy_protocols(1024),
    scorer=score_mmvet,
    locate=mmvet_json,
    judge=mmvet_judge,
    judge_required=True,
    summary=mmvet_summary,
    version="MM-Vet v1 (218 questions, 6 capabilities)",
    files="mm-vet/mm-vet.json + mm-vet/images/",
    scoring="its GPT-4 grader through --judge (0.0-1.0 per answer); total, per capability and integration",
)
