"""EmbSpatial-Bench (embodied spatial relations from an egocentric view), as the Hub's `FlagEval/EmbSpatial-Bench`
publishes it: parquet, split "test", with the columns lmms-eval (tasks/embspatial) and VLMEvalKit read:
question_id (the item's id), image (embedded), question, answer_options (a list), answer (the index of the right
option), relation, data_source (ai2thor | mp3d | scannet). `--data` is a parquet file or the folder holding them
(data/test-*.parquet, else every *.parquet in it). The authors' repository (mengfeidu/EmbSpatial-Bench) ships no
evaluation code, so the reference protocol is the standard harness's.

reference protocol: lmms-eval's `embspatial_doc_to_text`: "Note: You only need to respond with A, B, C, D without
providing any additional information.\\n" + question + "\\n" + "A) option" lines, after the image, in LLaVA-1.5's
vicuna_v1 template (lmms-eval's llava default), greedy, 1024 new tokens. Scoring: `scoring.embspatial`.
"""

from __future__ import annotations

from pathlib import Path

from sgeo.errors import SgeoError
from sgeo.scoring.embspatial import embspatial_summary, score_embspatial

from .common import BenchItem, clean, sgeo_choice_prompt
from .protocols import Prompt, greedy_protocols, llava_turn, reference_or_sgeo
from .published import LETTERS, data_files, read_parquet, unpack_image, unpack_root, unpacked_images
from .registry import Benchmark

LAYOUT = "EmbSpatial-Bench's test parquet (FlagEval/EmbSpatial-Bench)"
COLUMNS = ("question_id", "image", "question", "answer_options", "answer")
PRE_PROMPT = "Note: You only need to respond with A, B, C, D without providing any additional information.\n"


def load_embspatial(located: Path) -> list[BenchItem]:
    items = []
    root = unpack_root("embspatial", located)
    for path in data_files(located, ("data/test-*.parquet", "*.parquet"), LAYOUT):
        for row in read_parquet(path, COLUMNS, LAYOUT):
            qid = str(row["question_id"])
            options = [str(o) for o in row["answer_options"] or []]
            answer = row["answer"]
            if not isinstance(answer, int) or not 0 <= answer < min(len(options), len(LETTERS)):
                raise SgeoError(
                    f"{path} question_id {qid}: answer {answer!r} is not the index of one of its options"
                )
            image = unpack_image(root, qid, row["image"])
            if image is None:
                raise SgeoError(f"{path} question_id {qid} has no image bytes; pass {LAYOUT} as published")
            question = clean(str(row["question"]))
            items.append(
                BenchItem(
                    question_id=qid,
                    image=image,
                    prompt=sgeo_choice_prompt(question, options),
                    gt=LETTERS[answer],
                    qa_info={
                        "type": "multi-choice",
                        "category": str(row.get("relation") or "unknown"),
                        "source": str(row.get("data_source") or "unknown"),
                    },
                    options=options,
                    extra={"question": question},
                    raw_question=str(row["question"]),
                )
            )
    return items


def reference_prompt(item: BenchItem, multi_image: str) -> Prompt:
    listing = "\n".join(f"{LETTERS[k]}) {option}" for k, option in enumerate(item.options or []))
    return llava_turn(item, f"{PRE_PROMPT}{item.raw_question}\n{listing}")


BENCHMARK = Benchmark(
    name="embspatial",
    title="EmbSpatial-Bench",
    loader=load_embspatial,
    prompt=reference_or_sgeo(reference_prompt),
    decoding=greedy_protocols(1024),
    scorer=score_embspatial,
    image_root=unpacked_images("embspatial"),
    summary=embspatial_summary,
    version="FlagEval/EmbSpatial-Bench test (3,640 questions; 6 relations; AI2-THOR, MP3D, ScanNet)",
    files="parquet with question_id, image, question, answer_options, answer, relation, data_source",
    scoring="lmms-eval's letter reading; accuracy overall, per relation and per data source",
)
