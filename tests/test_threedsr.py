"""3DSRBench in the layout lmms-eval reads (its circular file: a question, its rotated-options variant and its
flipped version), asked and scored as lmms-eval's tasks/3dsrbench: vanilla, flip, circular and flip+circular."""

from __future__ import annotations

import json

import pytest

from benchmark_layouts import (
    THREEDSR_ROWS,
    THREEDSR_SCHEMA,
    write_hf_parquet,
    write_threedsr,
    write_threedsr_tsv,
)
from conftest import run_sgeo_batch
from sgeo.benchmarks import build_prompt, decoding_for, image_root, load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.eval import prompt_text
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer
from sgeo.scoring.threedsr import threedsr_letter
from sgeo.scoring.vlmevalkit import exact_matching

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_loads_ids_options_and_categories(tmp_path):
    items = load_benchmark("3dsrbench", write_threedsr(tmp_path))
    assert [it.question_id for it in items] == [str(r["index"]) for r in THREEDSR_ROWS]
    assert items[0].options == ["lamp", "table"]  # the "nan" options are no options
    assert items[4].qa_info == {"type": "orientation", "category": "orientation_viewpoint"}
    assert items[2].extra["qid"] == "VIN6MS3J-flip"


def test_reference_prompt_is_lmms_evals(tmp_path):
    item = load_benchmark("3dsrbench", write_threedsr(tmp_path))[1]
    expected = (
        f"{VICUNA} USER: <image>\nQuestion: Which object is higher in the 3D world space, the lamp or the table?\n"
        "Options:\nA. table\nB. lamp\nPlease select the correct answer from the options above. \n ASSISTANT:"
    )  # the post-prompt's trailing " \n" is sent, as lmms-eval's llava puts the question in the template as it is
    assert prompt_text(build_prompt(item, "3dsrbench", "reference")) == expected
    assert decoding_for("3dsrbench", "reference").max_new_tokens == 4096


@pytest.mark.parametrize(
    ("pred", "letter"),
    [("B", "B"), ("(B)", "B"), ("B. lamp", "B"), ("b", None), ("lamp", None), ("Yes.", None),
     ("The answer is B", "B"), ("A cat sits there", "A"), ("", None)],
)  # fmt: skip
def test_answers_as_lmms_eval_reads_them(pred, letter):
    assert threedsr_letter(pred) == letter


def test_vanilla_flip_and_circular_accuracy(tmp_path):
    items = load_benchmark("3dsrbench", write_threedsr(tmp_path / "d"))
    # all right but the flipped question's circular variant (index 3); the car's two variants right
    preds = ["A", "B", "B", "B", "A", "B"]
    answers = tmp_path / "run" / "answers.jsonl"
    answers.parent.mkdir()
    for item, pred in zip(items, preds, strict=True):
        append_answer(answers, item.to_record(pred))
    scores = score_answers(answers, "3dsrbench")["scores"]
    headline = scores["benchmark"]["headline"]
    assert headline["vanilla accuracy"] == pytest.approx(5 / 6)
    # flip pairs: VIN6MS3J+flip (right), VIN6MS3J-1+flip-1 (wrong), K2P0QX7A, K2P0QX7A-1 -> 3 of 4
    assert headline["flip accuracy"] == 0.75
    # circular groups: VIN6MS3J (right), VIN6MS3J-flip (wrong), K2P0QX7A (right) -> 2 of 3
    assert headline["circular accuracy"] == pytest.approx(2 / 3)
    assert headline["flip + circular accuracy"] == 0.5  # VIN6MS3J wrong, K2P0QX7A right
    assert scores["by_type"]["height"]["n"] == 4 and scores["by_type"]["orientation"]["score"] == 1.0


def test_an_answer_that_is_no_option_is_refused(tmp_path):
    rows = [{**THREEDSR_ROWS[0], "answer": "C"}]
    write_hf_parquet(tmp_path / "test.parquet", rows, THREEDSR_SCHEMA, {})
    with pytest.raises(SgeoError, match="index 0: answer 'C' is not one of its options"):
        load_benchmark("3dsrbench", tmp_path / "test.parquet")


# --- the authors' own form: ccvl/3DSRBench's 3dsrbench_v1_vlmevalkit_circular.tsv, scored as VLMEvalKit and their
# compute_3drbench_results_circular.py do


def test_the_authors_tsv_is_told_apart_by_the_file(tmp_path):
    items = load_benchmark("3dsrbench", write_threedsr_tsv(tmp_path / "ccvl"))
    assert [it.question_id for it in items] == [str(r["index"]) for r in THREEDSR_ROWS]
    assert items[0].options == ["lamp", "table"]  # the empty C and D cells are no options
    assert items[2].extra["qid"] == "VIN6MS3J-flip" and items[2].extra["form"] == "3dsrbench-tsv"
    assert items[4].qa_info == {"type": "orientation", "category": "orientation_viewpoint"}
    assert (image_root("3dsrbench", tmp_path / "ccvl") / items[0].image).read_bytes() == THREEDSR_ROWS[0][
        "image"
    ]["bytes"]


def test_reference_prompt_of_the_tsv_is_vlmevalkits_llava(tmp_path):
    item = load_benchmark("3dsrbench", write_threedsr_tsv(tmp_path))[1]
    expected = (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <image>\nWhich object is higher in the 3D "
        "world space, the lamp or the table?\nA. table\nB. lamp\nAnswer with the option's letter from the given "
        "choices directly. ASSISTANT:"
    )
    assert prompt_text(build_prompt(item, "3dsrbench", "reference")) == expected


@pytest.mark.parametrize(
    ("pred", "letter"),
    [("B", "B"), ("(B)", "B"), ("B. table", "B"), ("table", "B"), ("Yes.", "Z"), ("b", "Z"),
     ("The table is higher than the lamp.", "Z"),  # both options' texts: VLMEvalKit would ask GPT; none here
     ("I think it is B", "B"), ("A cat sits there", "A"), ("", "Z")],
)  # fmt: skip
def test_answers_as_vlmevalkit_reads_them(pred, letter):
    assert exact_matching(pred, {"A": "lamp", "B": "table"}) == letter


def test_the_authors_circular_groups(tmp_path):
    items = load_benchmark("3dsrbench", write_threedsr_tsv(tmp_path / "d"))
    # VIN6MS3J and its variant right; VIN6MS3J-flip-1 wrong (a group of its own with -flip); the car by its text
    preds = ["A", "(B)", "B. lamp", "B", "facing toward", "B"]
    answers = tmp_path / "run" / "answers.jsonl"
    answers.parent.mkdir()
    for item, pred in zip(items, preds, strict=True):
        append_answer(answers, item.to_record(pred))
    scores = score_answers(answers, "3dsrbench")["scores"]
    headline = scores["benchmark"]["headline"]
    assert scores["benchmark"]["groups"] == 3  # VIN6MS3J, VIN6MS3J-flip, K2P0QX7A
    assert headline["circular accuracy (authors' overall)"] == pytest.approx(2 / 3)
    assert headline["height (circular)"] == 0.5 and headline["orientation (circular)"] == 1.0
    assert headline["height_higher (circular)"] == 0.5
    assert "location (circular)" not in headline  # no location questions in this file: no figure
    assert scores["overall"]["n"] == 6


def test_a_tsv_of_another_layout_is_refused(tmp_path):
    path = tmp_path / "3dsrbench_v1_vlmevalkit_circular.tsv"
    path.write_text("index\tquestion\tanswer\n0\tWhich?\tA\n")
    with pytest.raises(SgeoError, match="lacks qid, A, B, C, D, category, image: not 3DSRBench's"):
        load_benchmark("3dsrbench", path)


def test_a_category_outside_3dsrbench_is_refused(tmp_path):
    write_threedsr_tsv(tmp_path, [{**THREEDSR_ROWS[0], "category": "height_lower"}])
    with pytest.raises(SgeoError, match="category 'height_lower' is none of 3DSRBench's 12"):
        load_benchmark("3dsrbench", tmp_path)


def test_the_tsv_through_sgeo_eval(tmp_path):
    data = write_threedsr_tsv(tmp_path / "ccvl")
    out = tmp_path / "run"
    [result] = run_sgeo_batch(
        [["eval", "--bench", "3dsrbench", "--data", data, "--out", out, "--model", "tiny", "--limit", "4"]
         + ["--max-new-tokens", "2", "--batch-size", "4"]]
    )  # fmt: skip
    assert result["code"] == 0, result["stderr"][-2000:]
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in records] == ["0", "1", "2", "3"]
    assert all(r["form"] == "3dsrbench-tsv" and r["qid"] for r in records)
    scores = json.loads((out / "scores.json").read_text())
    assert "circular accuracy (authors' overall)" in scores["benchmark"]["headline"]
