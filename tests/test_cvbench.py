"""CV-Bench as published (test_2d.parquet / test_3d.parquet with embedded images, or the JSONL beside img/),
asked as Cambrian asks a LLaVA-1.5-class model, scored as lmms-eval reads answers, summarised by the
card's formula."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from benchmark_layouts import (
    CVBENCH_2D,
    CVBENCH_3D,
    write_blink,
    write_cvbench,
    write_cvbench_jsonl,
)
from sgeo.benchmarks import build_prompt, decoding_for, image_root, load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.eval import prompt_text
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer
from sgeo.pipeline.images import load_image
from sgeo.scoring.cvbench import cvbench_summary, lmms_eval_letter, score_cvbench

# LLaVA's conv_vicuna_v1 system prompt (vicuna_v1, the template of Cambrian's ade_eval.py --conv_mode default)
VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_both_published_forms_load_with_their_own_ids_and_images(tmp_path):
    items = load_benchmark("cv-bench", write_cvbench(tmp_path / "hub"))
    rows = CVBENCH_2D + CVBENCH_3D
    assert [it.question_id for it in items] == [str(r["idx"]) for r in rows]
    root = image_root("cv-bench", tmp_path / "hub")
    for item, row in zip(items, rows, strict=True):
        assert item.image == row["filename"]  # unpacked under its published name, bytes as shipped
        assert (root / item.image).read_bytes() == row["image"]["bytes"]
        load_image(root / item.image)  # a JPEG named .png, as in the real files, decodes
        assert item.gt == row["answer"] and item.options == row["choices"]
        assert item.qa_info == {"type": row["type"], "category": row["task"], "source": row["source"]}
    # the JSONL form: the same items, images read from img/ beside the files
    jsonl = load_benchmark("cv-bench", write_cvbench_jsonl(tmp_path / "jsonl"))
    assert [(it.question_id, it.image, it.gt) for it in jsonl] == [
        (it.question_id, it.image, it.gt) for it in items
    ]
    assert image_root("cv-bench", tmp_path / "jsonl") == tmp_path / "jsonl"
    # one file of the two
    only_3d = load_benchmark("cv-bench", tmp_path / "hub" / "test_3d.parquet")
    assert [it.question_id for it in only_3d] == ["1438", "1439"]


def test_reference_prompt_is_cambrians_llava_prompt(tmp_path):
    (item,) = load_benchmark("cv-bench", write_cvbench(tmp_path))[:1]
    # ade_eval.py `process`: qs = line["prompt"] + "\n" + question_extension, "<image>\n" in front, vicuna_v1
    expected = (
        f"{VICUNA} USER: <image>\nHow many organs are in the image? Select from the following choices.\n"
        "(A) 3\n(B) 2\n(C) 1\n(D) 0\nAnswer with the option's letter from the given choices directly. ASSISTANT:"
    )
    assert prompt_text(build_prompt(item, "cv-bench", "reference")) == expected
    reference = decoding_for("cv-bench", "reference")
    assert (reference.sample, reference.max_new_tokens) == (
        False,
        512,
    )  # --temperature 0, --max_new_tokens 512
    sgeo = prompt_text(build_prompt(item, "cv-bench", "sgeo"))
    assert sgeo.endswith("USER: <image>\nHow many organs are in the image?\nA. 3\nB. 2\nC. 1\nD. 0\n"
                         "Answer with the option's letter from the given choices directly. ASSISTANT:")  # fmt: skip


@pytest.mark.parametrize(
    ("pred", "letter", "ok"),
    [
        ("B", "B", True),
        ("(B)", "B", True),
        ("B. right", "B", True),
        ("  (b) ", "B", True),  # lmms-eval ignores case
        ("B) right", "B", True),
        ("right", "R", False),  # the option's text: read as its first letter, as lmms-eval does
        ("Yes.", "Y", False),
        ("The answer is B.", "T", False),  # a sentence: its first letter
        ("2", "", False),  # a digit is no letter
        ("", "", False),
        ("A", "A", False),
    ],
)
def test_answer_letters_as_lmms_eval_reads_them(pred, letter, ok):
    assert lmms_eval_letter(pred) == letter
    assert score_cvbench({"pred": pred, "gt": "(B)"}) == {
        "kind": "multi-choice",
        "success": ok,
        "pred_letter": letter,
        "gt_letter": "B",
    }


def test_cvbench_accuracy_is_the_cards_formula(tmp_path):
    items = load_benchmark("cv-bench", write_cvbench(tmp_path / "hub"))
    # ADE20K: idx 0 right, 1 wrong (1/2); COCO: 2 and 3 right (2/2); Omni3D: both wrong (0/2)
    preds = {"0": "C", "1": "B", "2": "(B)", "3": "B. 3", "1438": "B", "1439": ""}
    answers = tmp_path / "run" / "answers.jsonl"
    answers.parent.mkdir()
    for item in items:
        append_answer(answers, item.to_record(preds[item.question_id]))
    scores = score_answers(answers, "cv-bench")["scores"]
    assert scores["by_source"]["ADE20K"]["score"] == 0.5 and scores["by_source"]["COCO"]["score"] == 1.0
    assert scores["by_category"]["Count"]["n"] == 3 and scores["by_type"]["3D"]["score"] == 0.0
    headline = scores["benchmark"]["headline"]
    assert headline["2D accuracy ((ADE20K + COCO) / 2)"] == 0.75
    assert headline["3D accuracy (Omni3D)"] == 0.0
    assert headline["CV-Bench accuracy"] == 0.375  # ((0.5 + 1.0) / 2 + 0.0) / 2, not the item mean 3/6
    assert scores["overall"]["score"] == 0.5
    # a run without a source (--limit): the formula is left out, and said why
    partial = cvbench_summary([{"qa_info": {"source": "ADE20K"}, "success": True}])
    assert partial["headline"] == {} and "Omni3D" in partial["note"] and "COCO" in partial["note"]


def test_files_of_another_layout_are_one_line(tmp_path):
    write_blink(tmp_path / "blink")
    blink_file = tmp_path / "blink" / "Counting" / "val-00000-of-00001.parquet"
    with pytest.raises(SgeoError, match=r"lacks type, task, source, image: not CV-Bench's test_2d.parquet"):
        load_benchmark("cv-bench", blink_file)
    (tmp_path / "test_2d.parquet").write_text("not parquet")
    with pytest.raises(SgeoError, match="is not a readable parquet file"):
        load_benchmark("cv-bench", tmp_path / "test_2d.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SgeoError, match="holds none of test_"):
        load_benchmark("cv-bench", tmp_path / "empty")
    # a row whose image column is empty is named
    table = pq.read_table(write_cvbench(tmp_path / "hub") / "test_3d.parquet").to_pylist()
    table[1]["image"] = None
    write_cvbench(tmp_path / "broken", rows_3d=table)
    with pytest.raises(SgeoError, match="item idx 1439 has no image bytes"):
        load_benchmark("cv-bench", tmp_path / "broken")
