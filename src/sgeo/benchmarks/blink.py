"""BLINK (`BLINK-Benchmark/BLINK` on the Hub), its spatial subtasks, as published.

Files (the dataset's repository): one folder per subtask, each with val-00000-of-00001.parquet and
test-00000-of-00001.parquet. Columns (its authors' eval/test_benchmark.py and lmms-eval tasks/blink read
them): idx ("val_Relative_Depth_1": the item's id), question, sub_task, image_1 .. image_4 (the encoded
files, the `datasets` Image struct; null where an item has fewer), choices, answer ("(A)"), prompt (the
question, "Select from the following choices." and "(A) ..." lines), explanation. `--data` is the
repository folder (then the val files of the spatial subtasks below), a subtask's folder or one parquet
file. The test split's answers are hidden ("hidden"): refused, since nothing could score it.

reference protocol: the images, each its own "<image>" (lmms-eval's `blink_doc_to_messages` gives every image;
--multi-image tile pastes them into one canvas), then `prompt` as the authors' test_benchmark.py asks it,
in LLaVA-1.5's vicuna_v1 template, greedy (their temperature 0.0), 1024 new tokens (their max_tokens).
Scoring: `scoring.blink` (their rules; their GPT-3.5 option matcher through --judge).
"""

from __future__ import annotations

from pathlib import Path

from sgeo.errors import SgeoError
from sgeo.scoring.blink import blink_judge, blink_summary, score_blink

from .common import BenchItem, clean, sgeo_choice_prompt
from .protocols import IMAGE, Prompt, greedy_protocols, llava_turn, reference_or_sgeo
from .published import read_parquet, unpack_image, unpack_root, unpacked_images
from .registry import Benchmark

SPATIAL_SUBTASKS = (
    "Relative_Depth",
    "Spatial_Relation",
    "Multi-view_Reasoning",
    "Object_Localization",
    "Counting",
)
LAYOUT = "a BLINK subtask's val-00000-of-00001.parquet (BLINK-Benchmark/BLINK)"
COLUMNS = ("idx", "question", "sub_task", "image_1", "choices", "answer", "prompt")
IMAGE_COLUMNS = ("image_1", "image_2", "image_3", "image_4")


def blink_files(data: Path) -> list[Path]:
    """The parquet files `data` names: itself; a subtask folder's val file; the repository's spatial
    subtasks' val files."""
    data = Path(data)
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise SgeoError(f"benchmark file not found: {data}")
    own = sorted(data.glob("val-*.parquet"))
    if own:
        return own
    found = [f for task in SPATIAL_SUBTASKS for f in sorted((data / task).glob("val-*.parquet"))]
    if not found:
        raise SgeoError(
            f"{data} holds no <subtask>/val-*.parquet of BLINK's spatial subtasks ({', '.join(SPATIAL_SUBTASKS)})"
        )
    return found


def load_blink(located: Path) -> list[BenchItem]:
    items = []
    root = unpack_root("blink", located)
    for path in blink_files(located):
        for row in read_parquet(path, COLUMNS, LAYOUT):
            qid = str(row["idx"])
            if str(row["answer"]).strip().lower() == "hidden":
                raise SgeoError(f"{path}: BLINK's test answers are hidden (item {qid}); pass the val files")
            images = [
                rel
                for k, column in enumerate(IMAGE_COLUMNS, 1)
                if (rel := unpack_image(root, f"{row['sub_task']}/{qid}_{k}", row.get(column))) is not None
            ]
            if not images:
                raise SgeoError(f"{path} item {qid} has no image bytes; pass {LAYOUT} as published")
            choices = [str(c) for c in row["choices"]]
            question = clean(str(row["question"]))
            items.append(
                BenchItem(
                    question_id=qid,
                    image=images[0],
                    prompt=sgeo_choice_prompt(question, choices),
                    gt=str(row["answer"]),
                    qa_info={"type": "multi-choice", "category": str(row["sub_task"])},
                    options=choices,
                    extra={"question": question, "images": images},
                    images=images,
                    raw_question=str(row["prompt"]),
                )
            )
    return items


def reference_prompt(item: BenchItem, multi_image: str) -> Prompt:
    # the prompt verbatim; an "<image>" in it (none in the published files) would add an image token
    return llava_turn(item, (item.raw_question or "").replace(IMAGE, "").strip(), multi_image)


BENCHMARK = Benchmark(
    name="blink",
    title="BLINK",
    loader=load_blink,
    prompt=reference_or_sgeo(reference_prompt),
    decoding=greedy_protocols(1024),
    scorer=score_blink,
    image_root=unpacked_images("blink"),
    multi_image=True,
    judge=blink_judge,
    summary=blink_summary,
    version="BLINK-Benchmark/BLINK val (spatial subtasks: " + ", ".join(SPATIAL_SUBTASKS) + ")",
    files="<subtask>/val-00000-of-00001.parquet (1 to 4 images embedded per item)",
    scoring="the authors' analyze_answer (--judge: their GPT-3.5 option matcher); mean of subtask accuracies",
)
