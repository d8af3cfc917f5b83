"""MME (the perception and cognition yes/no benchmark), as its authors release it: MME_Benchmark_release_version/,
one folder per subtask (existence, count, position, color, posters, celebrity, scene, landmark, artwork, OCR,
commonsense_reasoning, numerical_calculation, text_translation, code_reasoning). A subtask folder holds its
images and, per image, a .txt of the same name with two lines "question<TAB>Yes|No"; five of them (artwork,
celebrity, landmark, posters, scene) keep the images in images/ and the .txt files in questions_answers_YN/.
This is what LLaVA's llava/eval/MME/convert_answer_to_mme.py `get_gt` reads. `--data` is that folder, the
folder holding it, or one subtask's. An item's id is "<subtask>/<image file>#<1|2>" (LLaVA's question_id, and which of its two
questions).

reference protocol: LLaVA-1.5's (scripts/v1_5/eval/mme.sh; the SpatialGeo reference's llava/eval/MME/mme.sh):
llava_mme.jsonl asks each question + "\\nAnswer the question using a single word or phrase." through
`model_vqa_loader` ("<image>\\n" + text, vicuna_v1, --temperature 0, max_new_tokens 128). Scoring: `scoring.mme`.
"""

from __future__ import annotations

from pathlib import Path

from sgeo.errors import SgeoError
from sgeo.pipeline.json_files import read_text
from sgeo.scoring.mme import EVAL_TYPES, mme_summary, score_mme

from .common import JUDGMENT_SUFFIX, BenchItem, clean
from .protocols import greedy_protocols, suffix_prompt
from .registry import Benchmark

SUBTASKS = tuple(t for tasks in EVAL_TYPES.values() for t in tasks)
LAYOUT = (
    "MME_Benchmark_release_version/ (one folder per subtask, image + .txt of 'question<TAB>answer' lines)"
)
_IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


def release_folder(data: Path) -> Path:
    """`--data` as given, or the MME_Benchmark_release_version/ inside it (the unzipped download)."""
    data = Path(data)
    inner = data / "MME_Benchmark_release_version"
    return inner if inner.is_dir() else data


def _subtask_folders(data: Path) -> list[Path]:
    if not data.is_dir():
        raise SgeoError(
            f"{data} is not a folder: pass MME_Benchmark_release_version/ as its authors release it"
        )
    if data.name in SUBTASKS:
        return [data]
    found = [data / t for t in SUBTASKS if (data / t).is_dir()]
    if not found:
        raise SgeoError(f"{data} holds none of MME's subtask folders ({', '.join(SUBTASKS)}): not {LAYOUT}")
    return found


def load_mme(located: Path) -> list[BenchItem]:
    located = Path(located)
    items = []
    for folder in _subtask_folders(located):
        task = folder.name
        split = (folder / "images").is_dir()
        image_dir, qa_dir = (
            (folder / "images", folder / "questions_answers_YN") if split else (folder, folder)
        )
        if not qa_dir.is_dir():
            raise SgeoError(f"{folder} has images/ but no questions_answers_YN/: not {LAYOUT}")
        for txt in sorted(qa_dir.glob("*.txt")):
            image = next((image_dir / (txt.stem + s) for s in _IMAGE_SUFFIXES if (image_dir / (txt.stem + s)).is_file()),
                         None)  # fmt: skip
            if image is None:
                raise SgeoError(f"{txt} has no image {txt.stem}.jpg / .png beside it")
            lines = [line for line in read_text(txt, "MME question file ").splitlines() if line.strip()]
            for k, line in enumerate(lines, 1):
                question, tab, answer = line.strip().partition("\t")
                if not tab or answer.strip() not in ("Yes", "No", "yes", "no"):
                    raise SgeoError(f"{txt} line {k}: expected 'question<TAB>Yes|No', got {line[:80]!r}")
                rel = image.relative_to(located if located.name not in SUBTASKS else located.parent)
                items.append(
                    BenchItem(
                        question_id=f"{task}/{image.name}#{k}",
                        image=rel.as_posix(),
                        prompt=f"{clean(question)}\n{JUDGMENT_SUFFIX}",
                        gt=answer.strip(),
                        qa_info={
                            "type": "Perception" if task in EVAL_TYPES["Perception"] else "Cognition",
                            "category": task,
                        },
                        extra={"question": clean(question)},
                        raw_question=question,
                    )
                )
    return items


def mme_image_root(located: Path) -> Path:
    """Image paths are relative to the release folder (or to the parent of the one subtask given)."""
    located = Path(located)
    return located.parent if located.name in SUBTASKS else located


BENCHMARK = Benchmark(
    name="mme",
    title="MME",
    loader=load_mme,
    prompt=suffix_prompt(JUDGMENT_SUFFIX),
    decoding=greedy_protocols(128),
    scorer=score_mme,
    locate=release_folder,
    image_root=mme_image_root,
    summary=mme_summary,
    version="MME_Benchmark_release_version (14 subtasks, 2 questions per image)",
    files="<subtask>/<image> + <subtask>/<image>.txt (or images/ + questions_answers_YN/)",
    scoring="MME's calculation.py: acc and acc+ per subtask; Perception and Cognition totals",
)
