"""MME as its authors release it (a folder per subtask, two yes/no questions per image), asked as LLaVA-1.5's
mme.sh asks, scored by MME's calculation.py: acc and acc+ per subtask, Perception and Cognition totals."""

from __future__ import annotations

import pytest

from benchmark_layouts import write_mme
from sgeo.benchmarks import build_prompt, decoding_for, image_root, load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.eval import prompt_text
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer
from sgeo.scoring.mme import mme_label

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_both_folder_forms_load_two_questions_per_image(tmp_path):
    release = write_mme(tmp_path)
    items = load_benchmark("mme", release)
    ids = [it.question_id for it in items]
    assert ids[:2] == ["existence/000000006040.jpg#1", "existence/000000006040.jpg#2"]
    artwork = [it for it in items if it.qa_info["category"] == "artwork"]
    assert [it.image for it in artwork] == ["artwork/images/10002.jpg"] * 2  # images/ + questions_answers_YN/
    assert all((image_root("mme", release) / it.image).is_file() for it in items)
    assert {it.qa_info["type"] for it in items} == {"Perception", "Cognition"}
    one = load_benchmark("mme", release / "code_reasoning")  # a single subtask's folder
    assert [it.image for it in one] == ["code_reasoning/0020.png"] * 2
    assert (image_root("mme", release / "code_reasoning") / one[0].image).is_file()


def test_reference_prompt_is_llavas_mme_question(tmp_path):
    item = load_benchmark("mme", write_mme(tmp_path))[0]
    expected = (
        f"{VICUNA} USER: <image>\nIs there a train in this image? Please answer yes or no.\n"
        "Answer the question using a single word or phrase. ASSISTANT:"
    )
    assert prompt_text(build_prompt(item, "mme", "reference")) == expected
    assert decoding_for("mme", "reference").max_new_tokens == 128


@pytest.mark.parametrize(
    ("pred", "label"),
    [("Yes", "yes"), ("yes", "yes"), ("Yes.", "yes"), ("No", "no"), ("No.", "no"), ("Not sure", "no"),
     ("Nope", "no"), ("There is a train.", "other"), ("B", "other"), ("(B)", "other"), ("", "other"),
     ("Yes, there is.", "yes"), ("I think yes", "other")],
)  # fmt: skip
def test_answers_as_calculation_py_reads_them(pred, label):
    assert mme_label(pred) == label


def test_acc_plus_and_the_totals(tmp_path):
    items = load_benchmark("mme", write_mme(tmp_path / "mme"))
    preds = {  # existence: image 1 both right, image 2 one right; artwork both right; code_reasoning none
        "existence/000000006040.jpg#1": "Yes", "existence/000000006040.jpg#2": "No",
        "existence/000000044279.jpg#1": "No", "existence/000000044279.jpg#2": "There is a sink.",
        "artwork/10002.jpg#1": "Yes.", "artwork/10002.jpg#2": "No",
        "code_reasoning/0020.png#1": "No", "code_reasoning/0020.png#2": "",
    }  # fmt: skip
    answers = tmp_path / "run" / "answers.jsonl"
    answers.parent.mkdir()
    for item in items:
        append_answer(answers, item.to_record(preds[item.question_id]))
    result = score_answers(answers, "mme")
    summary = result["scores"]["benchmark"]
    table = summary["tables"]["by subtask"]
    assert table["existence"] == {"acc": 0.75, "acc+": 0.5, "score": 125.0}
    assert table["artwork"] == {"acc": 1.0, "acc+": 1.0, "score": 200.0}
    assert table["code_reasoning"] == {"acc": 0.0, "acc+": 0.0, "score": 0.0}
    assert summary["headline"] == {
        "Perception score (sum of 10 subtasks)": 325.0,
        "Cognition score (sum of 4 subtasks)": 0.0,
    }
    assert "count, position" in summary["note"]  # the subtasks the totals lack
    assert "Perception score (sum of 10 subtasks)  325.00" in result["table"]  # points, not a percentage


def test_a_folder_of_another_layout_is_one_line(tmp_path):
    (tmp_path / "other").mkdir()
    with pytest.raises(SgeoError, match="holds none of MME's subtask folders"):
        load_benchmark("mme", tmp_path / "other")
    release = write_mme(tmp_path / "mme")
    (release / "existence" / "000000006040.txt").write_text("Is there a train?\n")
    with pytest.raises(SgeoError, match="000000006040.txt line 1: expected 'question<TAB>Yes|No'"):
        load_benchmark("mme", release)
