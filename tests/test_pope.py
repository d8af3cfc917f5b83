"""POPE in both published layouts (POPE's coco_pope_<category>.json with COCO images by name; lmms-lab's parquet),
asked as LLaVA-1.5's pope.sh asks, scored as LLaVA's eval_pope.py: accuracy, precision, recall, F1, yes-ratio
per category."""

from __future__ import annotations

import json

import pytest

from benchmark_layouts import POPE_CATEGORIES, write_pope, write_pope_parquet
from conftest import run_sgeo_batch
from sgeo.benchmarks import build_prompt, decoding_for, load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.eval import prompt_text
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer
from sgeo.scoring.pope import pope_label, pope_metrics

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_both_layouts_load_with_category_and_own_question_id(tmp_path):
    coco = write_pope(tmp_path / "pope")
    items = load_benchmark("pope", coco)
    assert (
        len(items) == 12 and items[0].question_id == "adversarial/0" and items[4].question_id == "popular/0"
    )
    assert items[0].image == "COCO_val2014_000000548882.jpg" and items[0].gt == "yes" and items[1].gt == "no"
    assert {it.qa_info["category"] for it in items} == set(POPE_CATEGORIES)
    one = load_benchmark("pope", coco / "coco_pope_random.json")
    assert [it.question_id for it in one] == [f"random/{k}" for k in range(4)]
    parquet = load_benchmark("pope", write_pope_parquet(tmp_path / "lmms"))
    assert len(parquet) == 12 and {it.qa_info["category"] for it in parquet} == set(POPE_CATEGORIES)


def test_other_files_are_refused_in_one_line(tmp_path):
    coco = write_pope(tmp_path / "pope")
    renamed = tmp_path / "random.json"
    renamed.write_text((coco / "coco_pope_random.json").read_text())
    with pytest.raises(SgeoError, match="named coco_pope_<category>.json"):
        load_benchmark("pope", renamed)
    bad = tmp_path / "bad" / "coco_pope_random.json"
    bad.parent.mkdir()
    bad.write_text(
        json.dumps({"question_id": 0, "image": "x.jpg", "text": "Is there a cat?", "label": "maybe"})
    )
    with pytest.raises(SgeoError, match="label 'maybe' is not yes or no"):
        load_benchmark("pope", bad)
    bad.write_text(json.dumps({"question_id": 0, "image": "x.jpg", "question": "Is there a cat?"}))
    with pytest.raises(SgeoError, match="lacks text, label: not POPE's"):
        load_benchmark("pope", bad)


def test_reference_prompt_is_llavas_pope_question(tmp_path):
    (item,) = load_benchmark("pope", write_pope(tmp_path) / "coco_pope_random.json")[:1]
    # llava_pope_test.jsonl's text through model_vqa_loader: "<image>\n" + text, vicuna_v1
    expected = (
        f"{VICUNA} USER: <image>\nIs there a dining table in the image?\n"
        "Answer the question using a single word or phrase. ASSISTANT:"
    )
    assert prompt_text(build_prompt(item, "pope", "reference")) == expected
    reference = decoding_for("pope", "reference")
    assert (reference.sample, reference.max_new_tokens) == (False, 128)  # --temperature 0, its default 128


@pytest.mark.parametrize(
    ("pred", "label"),
    [
        ("Yes", "yes"),
        ("Yes.", "yes"),
        ("No", "no"),
        ("No.", "no"),
        ("no, there isn't", "no"),  # commas are removed before the words are split
        ("There is no dining table in the image.", "no"),
        ("The image does not show a tv.", "no"),
        ("Yes. There is no tv.", "yes"),  # only the first sentence counts
        ("NO", "yes"),  # only "No", "no" and "not" read no
        ("Nope", "yes"),
        ("B", "yes"),
        ("(B)", "yes"),
        ("B. no", "yes"),  # "B" is the first sentence
        ("", "yes"),  # an empty answer reads yes, as in eval_pope.py
    ],
)
def test_answers_read_as_eval_pope_reads_them(pred, label):
    assert pope_label(pred) == label


def test_metrics_per_category_as_eval_pope(tmp_path):
    items = load_benchmark("pope", write_pope(tmp_path / "pope"))
    # labels per category: yes, no, yes, no. adversarial answers: yes, yes, no, no -> TP 1, FP 1, FN 1, TN 1
    preds = {
        "adversarial": ["Yes", "Yes", "No", "No"],
        "popular": ["Yes"] * 4,
        "random": ["Yes", "No", "Yes", "No"],
    }
    answers = tmp_path / "run" / "answers.jsonl"
    answers.parent.mkdir()
    for item in items:
        category, k = item.question_id.split("/")
        append_answer(answers, item.to_record(preds[category][int(k)]))
    summary = score_answers(answers, "pope")["scores"]["benchmark"]
    table = summary["tables"]["by category"]
    assert table["adversarial"] == {
        "accuracy": 0.5, "precision": 0.5, "recall": 0.5, "F1": 0.5, "yes-ratio": 0.5,
        "TP": 1, "FP": 1, "TN": 1, "FN": 1,
    }  # fmt: skip
    # popular: all yes -> precision 2/4, recall 1, F1 2/3, yes-ratio 1
    assert table["popular"]["precision"] == 0.5 and table["popular"]["recall"] == 1.0
    assert table["popular"]["F1"] == pytest.approx(2 / 3) and table["popular"]["yes-ratio"] == 1.0
    assert table["random"]["accuracy"] == 1.0 and table["random"]["F1"] == 1.0
    mean_f1 = summary["headline"]["F1 (mean over adversarial, popular, random)"]
    assert mean_f1 == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    # no "yes" answer at all: eval_pope.py would divide by zero; here 0 and a note
    none = pope_metrics([{"pred_label": "no", "gt": "yes"}, {"pred_label": "no", "gt": "no"}])
    assert none["precision"] == 0.0 and none["F1"] == 0.0 and none["accuracy"] == 0.5


def test_pope_through_sgeo_eval_with_coco_images_by_name(tmp_path):
    coco = write_pope(tmp_path / "pope")
    out = tmp_path / "out"
    args = ["eval", "--bench", "pope", "--data", coco, "--out", out, "--model", "tiny", "--limit", "2"]
    missing, result = run_sgeo_batch(
        [
            [*args, "--max-new-tokens", "2"],  # the images are not beside the annotation files
            [*args, "--max-new-tokens", "2", "--image-root", tmp_path / "pope" / "val2014"],
        ]
    )
    assert missing["code"] == 2 and "pass --image-root" in missing["stderr"]
    assert result["code"] == 0, result["stderr"][-2000:]
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in records] == ["adversarial/0", "adversarial/1"]
    assert "F1 (mean over adversarial)" in result["stdout"]
