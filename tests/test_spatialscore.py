"""SpatialScore as shipped: every row of a file in its real format loads, and answers score as SpatialScore's
own code scores them (version_0/test_all-in-one.py `main()` with version_0/utils/util.py), checked against
values worked out by hand from their rules. No model is involved."""

from __future__ import annotations

import json

import pytest

from benchmark_fixtures import SPATIALSCORE_CREDITS, SPATIALSCORE_PREDS, SPATIALSCORE_ROWS, write_spatialscore
from sgeo.benchmarks import build_prompt, image_root, load_benchmark, split_options
from sgeo.errors import SgeoError
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer
from sgeo.scoring import (
    extract_number,
    extract_option,
    extract_yes_no,
    mean_relative_accuracy,
    numeric_with_unit,
    score_spatialscore,
)

# ------------------------------------------------------------------------------------------------ loading


def test_every_row_of_the_real_format_loads(tmp_path):
    path = write_spatialscore(tmp_path)
    items = load_benchmark("spatialscore", path)
    assert [it.question_id for it in items] == [
        str(r["index"]) for r in SPATIALSCORE_ROWS
    ]  # `index`, not position
    assert {it.qa_info["type"] for it in items} == {"multi-choice", "open-ended", "judgment"}
    assert len({it.qa_info["source"] for it in items}) == 10
    assert (
        image_root("spatialscore", path) == tmp_path
    )  # "./dataset/..." paths, from the folder above dataset/
    for item, row in zip(items, SPATIALSCORE_ROWS, strict=True):
        assert item.images == row["img_paths"] and item.gt == row["answer"]  # the answer as shipped
        assert (
            item.qa_info["category"] == row["category"] and item.qa_info["subcategory"] == row["subcategory"]
        )
        assert item.raw_question == row["question"]
        if row["question_type"] == "multi-choice":
            assert item.options and all(o and "\n" not in o for o in item.options)
    by_id = {it.question_id: it for it in items}
    assert by_id["258"].options == ["Left", "Right"]  # lower-case "(a) Left (b) Right"
    assert by_id["12"].options == ["2", "0", "3", "1"]
    assert by_id["700"].options == [
        "back-left",
        "front-right",
        "front-left",
        "back-right",
    ]  # "Options: A. x, B. y"
    assert len(by_id["700"].images) == 8 and len(by_id["501"].images) == 2
    # text after the last option stays out of it, and is still asked after the listing
    assert by_id["1200"].options == ["Sunny", "Rainy", "Cloudy"]
    assert by_id["501"].options[-1] == "Point D"
    assert by_id["501"].prompt.endswith(
        "A. Point A\nB. Point B\nC. Point C\nD. Point D\nWhich point is corresponding to the reference point?\n"
        "Answer with the option's letter from the given choices directly."
    )
    # options over several lines, set apart by blank lines (VGBench's homographies)
    assert (
        by_id["950"].options[3]
        == "0.4849 -0.15095 280.72 -0.18568 0.38797 170.57 -4.9965e-05 -0.00024428 0.99985"
    )
    assert by_id["900"].prompt == by_id["900"].extra["question"]  # open-ended: asked as written


@pytest.mark.parametrize(
    ("question", "stem", "options", "after"),
    [
        ("Which?\n(a) up (b) down", "Which?", ["up", "down"], ""),
        ("Which?\n(A) x\n(B) y\n(C) z", "Which?", ["x", "y", "z"], ""),
        ("Q? Options: A. p, B. q, C. r", "Q?", ["p", "q", "r"], ""),
        ("Q?\nA: one\nB: two\nPlease answer directly.", "Q?", ["one", "two"], "Please answer directly."),
        ("No options here, A. Smith said.", "No options here, A. Smith said.", None, ""),
    ],
)
def test_split_options(question, stem, options, after):
    assert split_options(question) == (stem, options, after)


def test_a_row_without_images_is_refused_with_its_index(tmp_path):
    path = write_spatialscore(tmp_path, [dict(SPATIALSCORE_ROWS[0], img_paths=[])])
    with pytest.raises(SgeoError, match=r"item 0 \(index 258\) has no img_paths"):
        load_benchmark("spatialscore", path)
    path = write_spatialscore(tmp_path, [SPATIALSCORE_ROWS[0], SPATIALSCORE_ROWS[0]], name="twice.json")
    with pytest.raises(SgeoError, match="question id '258' is used by more than one item"):
        load_benchmark("spatialscore", path)


def test_reference_protocol_refuses_a_source_their_code_does_not_know(tmp_path):
    path = write_spatialscore(tmp_path, [dict(SPATIALSCORE_ROWS[0], source="NewBench")])
    (item,) = load_benchmark("spatialscore", path)  # loading is fine
    with pytest.raises(SgeoError, match="source 'NewBench' has no instruction .* use --protocol sgeo"):
        build_prompt(item, "spatialscore", "reference")
    assert build_prompt(item, "spatialscore", "sgeo").human.startswith("<image>\nIn the picture")


# ------------------------------------------------------------------------------------------------ the rules


def test_each_row_scores_as_worked_out_by_hand(tmp_path):
    items = load_benchmark("spatialscore", write_spatialscore(tmp_path))
    credits = [
        score_spatialscore(it.to_record(p))["credit"] for it, p in zip(items, SPATIALSCORE_PREDS, strict=True)
    ]
    assert credits == pytest.approx(SPATIALSCORE_CREDITS)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(D)", "D"),
        ("(a)", "A"),
        ("b.", "B"),
        ("Answer: (C)", "C"),
        ("<conclusion>(E) yes</conclusion>", "E"),
        ("I pick the second, (b)", "B"),
        ("A cat", "A"),  # their lone-letter rule takes the article
        ("It is the red one", "E"),  # their last resort: the first a-f anywhere, the "e" of "the"
    ],
)
def test_extract_option(text, letter):
    assert extract_option(text) == letter


def test_yes_no_and_numbers_follow_their_order_of_tests():
    assert extract_yes_no("no") == "No" and extract_yes_no("Yes.") == "Yes"
    assert extract_yes_no("That is not right") == "Yes"  # "right" is a yes-word, tested before "not"
    assert extract_yes_no("Nope") == "No"
    assert extract_yes_no("maybe") == "maybe"
    assert extract_number("There are seventeen chairs") == "7"  # "seven" comes first in their table
    assert extract_number("about 3.5 m") == "3.5" and extract_number("none") == "none"


def test_lengths_pass_within_a_ratio_of_two():
    ratio_17 = numeric_with_unit("It is about 3.4 meters deep.", "2 meters")  # 340 / 200 = 1.7
    assert ratio_17["is_correct"] and ratio_17["value"] == 3.4 and ratio_17["unit"] == "meters"
    assert numeric_with_unit("90 cm", "1.72 meters")["is_correct"]  # 172 / 90 = 1.91
    assert not numeric_with_unit("85 cm", "1.72 meters")["is_correct"]  # 172 / 85 = 2.02
    assert numeric_with_unit("4 feet", "1.5 m")["is_correct"]  # 121.92 cm vs 150 cm
    assert not numeric_with_unit("4 meters", "2 meters")["is_correct"]  # exactly 2 is not under 2
    assert not numeric_with_unit("0 m", "1 m")["is_correct"] and numeric_with_unit("0 m", "0 m")["is_correct"]
    assert not numeric_with_unit("three meters", "3 meters")["is_correct"]  # no digits: nothing read


def test_vsi_bench_counts_get_mean_relative_accuracy():
    # thresholds 1 - c for c = 0.50, 0.55, ..., 0.95 (10 of them); error |5 - 4| / 4 = 0.25 is within
    # 0.50, 0.45, 0.40, 0.35, 0.30 and 0.25: 6 of 10
    assert mean_relative_accuracy(5, 4) == pytest.approx(0.6)
    assert mean_relative_accuracy(4, 4) == 1.0 and mean_relative_accuracy(8, 4) == 0.0
    vsi = {"type": "open-ended", "source": "VSI-Bench_8"}
    assert score_spatialscore({"pred": "5", "gt": "4", "qa_info": vsi})["credit"] == pytest.approx(0.6)
    assert score_spatialscore({"pred": "I see five", "gt": "4", "qa_info": vsi})["credit"] == pytest.approx(
        0.6
    )
    assert score_spatialscore({"pred": "none", "gt": "0", "qa_info": vsi})["credit"] == 1.0  # 0 for 0
    # elsewhere a count must be exact
    other = {"type": "open-ended", "source": "spatialbench"}
    assert score_spatialscore({"pred": "5", "gt": "4", "qa_info": other})["credit"] == 0.0
    assert score_spatialscore({"pred": "4.0", "gt": "4", "qa_info": other})["credit"] == 1.0


def test_score_answers_reports_by_category_subcategory_and_source(tmp_path):
    items = load_benchmark("spatialscore", write_spatialscore(tmp_path))
    answers = tmp_path / "out" / "answers.jsonl"
    answers.parent.mkdir()
    for item, pred in zip(items, SPATIALSCORE_PREDS, strict=True):
        append_answer(answers, item.to_record(pred))
    skipped = items[0].to_record("")
    append_answer(answers, {**skipped, "question_id": "x", "skipped": "too long"})  # counts, as wrong
    scores = score_answers(answers, "spatialscore")["scores"]
    assert scores["overall"]["n"] == 15 and scores["overall"]["score"] == pytest.approx(7.6 / 15)
    assert scores["overall"]["skipped"] == 1 and scores["overall"]["score_sum"] == pytest.approx(7.6)
    # VSI-Bench_8: multi-choice "b" right (1), count 5 for 4 (0.6)
    assert scores["by_source"]["VSI-Bench_8"] == pytest.approx(
        {"n": 2, "score": 0.8, "correct": 1, "score_sum": 1.6}
    )
    # VGBench: ratio-1.7 length (1), "not right" judged Yes (1), homography C for D (0)
    assert scores["by_source"]["VGBench"]["score"] == pytest.approx(2 / 3)
    # Counting: cvbench D (1), VSI count (0.6), BLINK (B) (1)
    assert scores["by_category"]["Counting"]["score"] == pytest.approx(2.6 / 3)
    assert scores["by_subcategory"]["Depth and Distance / Absolute"]["score"] == 1.0
    # MMVP (a) right, the skipped copy of it wrong; RealWorldQA: both wrong
    assert scores["by_subcategory"]["Others / Miscellaneous"]["score"] == pytest.approx(1 / 4)
    assert scores["by_type"]["judgment"]["score"] == pytest.approx(2 / 3)
    assert json.loads((tmp_path / "out" / "scores.json").read_text())["by_source"]["MMVP"]["n"] == 2
