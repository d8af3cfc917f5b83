"""POPE (github.com/AoiDragon/POPE), the object-hallucination check LLaVA-1.5 and SpatialGeo report, as published.

Two layouts:
- POPE's own files, which LLaVA's `eval_pope.py --annotation-dir` reads: coco_pope_random.json,
  coco_pope_popular.json, coco_pope_adversarial.json (POPE's output/coco/; LLaVA's benchmark/eval/pope/coco/),
  JSON lines {"question_id", "image": "COCO_val2014_000000310196.jpg", "image_id", "text", "label"}. The
  category is the file name's tail, as eval_pope.py takes it (`file[10:-5]`). Images are COCO val2014 by file
  name: pass the folder holding them as --image-root.
- lmms-lab/POPE, which lmms-eval reads: data/test-0000N-of-00003.parquet with question_id, question, answer,
  image (embedded), category.
`--data` is one such file, or the folder holding them. An item's id is its category and its own question_id
("adversarial/12"): POPE numbers each category's questions from 0.

reference protocol: LLaVA-1.5's (`scripts/v1_5/eval/pope.sh`, the SpatialGeo reference's llava/eval/pope/pope.sh):
llava_pope_test.jsonl asks each question + "\\nAnswer the question using a single word or phrase." through
`model_vqa_loader` ("<image>\\n" + text, vicuna_v1, --temperature 0, max_new_tokens 128). Scoring: `scoring.pope`.
"""

from __future__ import annotations

from pathlib import Path

from sgeo.errors import SgeoError
from sgeo.scoring.pope import pope_summary, score_pope

from .common import JUDGMENT_SUFFIX, BenchItem, clean, read_rows
from .protocols import greedy_protocols, suffix_prompt
from .published import check_columns, files_or_unpacked, read_parquet, unpack_image, unpack_root
from .registry import Benchmark

LAYOUT = "POPE's coco_pope_<category>.json (JSON lines) or lmms-lab/POPE's test-*.parquet"


def pope_files(data: Path) -> list[Path]:
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise SgeoError(f"benchmark file not found: {data}")
    for pattern in ("*_pope_*.json", "data/test-*.parquet", "test-*.parquet"):
        if found := sorted(data.glob(pattern)):
            return found
    raise SgeoError(f"{data} holds no coco_pope_<category>.json nor test-*.parquet: not {LAYOUT}")


def _item(qid: str, image: str, question: str, label: str, category: str, where: str) -> BenchItem:
    label = label.strip().lower()
    if label not in ("yes", "no"):
        raise SgeoError(f"{where}: label {label!r} is not yes or no; not {LAYOUT}")
    question = clean(question)
    return BenchItem(
        question_id=f"{category}/{qid}",
        image=image,
        prompt=f"{question}\n{JUDGMENT_SUFFIX}",
        gt=label,
        qa_info={"type": "yes/no", "category": category},
        extra={"question": question},
        raw_question=question,
    )


def _from_json(path: Path) -> list[BenchItem]:
    name = path.name
    if "_pope_" not in name or not name.endswith(".json"):
        raise SgeoError(
            f"{path}: POPE's files are named coco_pope_<category>.json (the category is read from it)"
        )
    category = name[name.index("_pope_") + len("_pope_") : -len(".json")]
    rows = read_rows(path)
    check_columns(
        path, set().union(*(r.keys() for r in rows)), ("question_id", "image", "text", "label"), LAYOUT
    )
    return [
        _item(str(r["question_id"]), str(r["image"]), str(r["text"]), str(r["label"]), category,
              f"{path} question_id {r['question_id']}")
        for r in rows
    ]  # fmt: skip


def _from_parquet(path: Path, root: Path) -> list[BenchItem]:
    items = []
    for r in read_parquet(path, ("question_id", "question", "answer", "image", "category"), LAYOUT):
        qid, category = str(r["question_id"]), str(r["category"])
        image = unpack_image(root, f"{category}/{qid}", r["image"])
        if image is None:
            raise SgeoError(f"{path} question_id {qid} has no image bytes; pass {LAYOUT} as published")
        items.append(
            _item(qid, image, str(r["question"]), str(r["answer"]), category, f"{path} question_id {qid}")
        )
    return items


def load_pope(located: Path) -> list[BenchItem]:
    root = unpack_root("pope", located)
    items: list[BenchItem] = []
    for path in pope_files(located):
        items.extend(_from_parquet(path, root) if path.suffix == ".parquet" else _from_json(path))
    return items


BENCHMARK = Benchmark(
    name="pope",
    title="POPE",
    loader=load_pope,
    prompt=suffix_prompt(JUDGMENT_SUFFIX),
    decoding=greedy_protocols(128),
    scorer=score_pope,
    image_root=files_or_unpacked("pope"),
    summary=pope_summary,
    version="POPE COCO (random, popular, adversarial; 3 x 3,000 questions)",
    files="coco_pope_{random,popular,adversarial}.json + COCO val2014 (--image-root), or lmms-lab/POPE parquet",
    scoring="LLaVA's eval_pope.py: accuracy, precision, recall, F1, yes-ratio per category",
)
