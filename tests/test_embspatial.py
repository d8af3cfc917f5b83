"""EmbSpatial-Bench as the Hub publishes it (parquet, answer as an option index), asked and scored as lmms-eval's
tasks/embspatial does (the authors ship no evaluation code)."""

from __future__ import annotations

import pytest

from benchmark_layouts import EMBSPATIAL_ROWS, EMBSPATIAL_SCHEMA, write_embspatial, write_hf_parquet
from sgeo.benchmarks import build_prompt, decoding_for, image_root, load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.eval import prompt_text
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer
from sgeo.scoring.embspatial import score_embspatial

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_loads_with_own_ids_letters_relations_and_sources(tmp_path):
    items = load_benchmark("embspatial", write_embspatial(tmp_path))
    assert [it.question_id for it in items] == ["mp3d_0", "scannet_7", "ai2thor_3"]
    assert [it.gt for it in items] == ["B", "C", "A"]  # "ABCD"[answer]
    assert items[0].qa_info == {"type": "multi-choice", "category": "below", "source": "mp3d"}
    root = image_root("embspatial", tmp_path)
    assert (root / items[0].image).read_bytes() == EMBSPATIAL_ROWS[0]["image"]["bytes"]


def test_reference_prompt_is_lmms_evals(tmp_path):
    item = load_benchmark("embspatial", write_embspatial(tmp_path))[1]
    expected = (
        f"{VICUNA} USER: <image>\nNote: You only need to respond with A, B, C, D without providing any additional "
        "information.\nWhich object, in relation to your current position, holds the farthest placement in the "
        "image?\nA) chair\nB) table\nC) door\nD) lamp ASSISTANT:"
    )
    assert prompt_text(build_prompt(item, "embspatial", "reference")) == expected
    assert decoding_for("embspatial", "reference").max_new_tokens == 1024


@pytest.mark.parametrize(
    ("pred", "ok"),
    [("C", True), ("(C)", True), ("C. door", True), ("c", True), ("door", False), ("Yes.", False),
     ("The door is farthest.", False), ("", False)],
)  # fmt: skip
def test_answers_as_lmms_eval_reads_them(pred, ok):
    assert score_embspatial({"pred": pred, "gt": "C"})["success"] is ok


def test_accuracy_per_relation_and_source(tmp_path):
    items = load_benchmark("embspatial", write_embspatial(tmp_path / "data"))
    answers = tmp_path / "run" / "answers.jsonl"
    answers.parent.mkdir()
    for item, pred in zip(items, ["B", "A", "A) Fridge"], strict=True):
        append_answer(answers, item.to_record(pred))
    scores = score_answers(answers, "embspatial")["scores"]
    assert scores["benchmark"]["headline"]["EmbSpatial accuracy"] == pytest.approx(2 / 3)
    assert scores["by_source"]["scannet"]["score"] == 0.0 and scores["by_category"]["left"]["score"] == 1.0


def test_an_answer_that_is_no_option_index_is_refused(tmp_path):
    rows = [{**EMBSPATIAL_ROWS[0], "answer": 4}]
    write_hf_parquet(tmp_path / "test.parquet", rows, EMBSPATIAL_SCHEMA, {})
    with pytest.raises(
        SgeoError, match="question_id mp3d_0: answer 4 is not the index of one of its options"
    ):
        load_benchmark("embspatial", tmp_path / "test.parquet")
