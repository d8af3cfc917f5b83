"""Benchmark loading and rule-based scoring of spatial VQA answers (no model involved)."""

from __future__ import annotations

import json

import pytest

from sgeo.benchmarks import (
    DIRECTION_SUFFIX,
    QUALITATIVE_SUFFIX,
    QUANTITATIVE_SUFFIX,
    REGISTRY,
    image_root,
    load_benchmark,
)
from sgeo.errors import SgeoError
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer, read_answers
from sgeo.scoring import (
    aggregate,
    format_table,
    parse_choice,
    parse_quantity,
    score_direction,
    score_item,
    score_multiple_choice,
    score_qualitative,
    score_quantitative,
)

# ------------------------------------------------------------------------------------------- quantities


@pytest.mark.parametrize(
    ("text", "metres"),
    [
        ("2 m", 2.0),
        ("2.5m", 2.5),
        ("3 meters", 3.0),
        ("3 metres", 3.0),
        ("250 cm", 2.5),
        ("1,200 mm", 1.2),
        ("1.2 km", 1200.0),
        ("10 feet", 3.048),
        ("1 foot", 0.3048),
        ("{0.56 feets}", 0.56 * 0.3048),  # the reference's own answer format
        ("2 ft", 0.6096),
        ("5'", 1.524),
        ("12 inches", 0.3048),
        ("10 in.", 0.254),
        ("3 yards", 2.7432),
        ("5 feet 6 inches", 5 * 0.3048 + 6 * 0.0254),
        ("5'6\"", 5 * 0.3048 + 6 * 0.0254),
        ("1 m 20 cm", 1.2),
        ("2-3 m", 2.5),
        ("between 2 and 3 meters", 2.5),
        ("It is roughly 2 to 4 feet wide.", 3 * 0.3048),
        ("The 2-meter table", 2.0),
        ("Region [0] and Region [1] are 11.4 meters apart.", 11.4),
    ],
)
def test_units(text, metres):
    assert parse_quantity(text) == pytest.approx(metres)


@pytest.mark.parametrize(
    ("text", "metres"),
    [
        ("three meters", 3.0),
        ("two meters", 2.0),
        ("a meter", 1.0),
        ("half a meter", 0.5),
        ("three and a half feet", 3.5 * 0.3048),
        ("a meter and a half", 1.5),
        ("twenty-five centimeters", 0.25),
        ("one hundred and twenty inches", 120 * 0.0254),
        ("two point five meters", 2.5),
    ],
)
def test_spelled_numbers(text, metres):
    assert parse_quantity(text) == pytest.approx(metres)


def test_no_unit_is_unreadable_unless_a_default_is_given():
    assert parse_quantity("about 3") is None
    assert parse_quantity("3 in front of the chair") is None  # "in" the preposition, not inches
    assert parse_quantity("Region [0] is there") is None
    assert parse_quantity("about 3", default_unit="m") == 3.0


def test_quantitative_success_band():
    assert score_quantitative("about 2.5 meters", "250 cm")["success"]
    assert not score_quantitative("10 feet", "1.5 m")["success"]
    assert score_quantitative("1.25 m", "100 cm")["success"]  # both ends of 0.75x..1.25x are in
    assert score_quantitative("75 cm", "1 m")["success"]
    assert not score_quantitative("1.26 m", "1 m")["success"]
    r = score_quantitative("2 meters", "The height of Region [0] is 1.6 meters.")
    assert r["success"] and r["rel_error"] == pytest.approx(0.25)
    unreadable = score_quantitative("I cannot tell", "1 m")
    assert not unreadable["success"] and unreadable["rel_error"] is None


# -------------------------------------------------------------------------------------------- direction


def test_direction_within_one_hour():
    assert score_direction("4 o'clock", "3 o'clock")["success"]
    assert not score_direction("6 o'clock", "3 o'clock")["success"]
    assert score_direction("12 o'clock", "1 o'clock")["success"]  # the circle wraps
    assert score_direction("Region [1] is at eleven o’clock.", "around the 12 o'clock direction")["success"]
    assert not score_direction("to the left", "3 o'clock")["success"]


# ------------------------------------------------------------------------------------------ qualitative


def test_relation_word_matches_the_gt():
    for category in ("left_predicate", "left_choice"):
        assert score_qualitative("the red box is on the left", "left", category)["success"]
        assert not score_qualitative("the red box is on the right", "left", category)["success"]


@pytest.mark.parametrize(
    ("pred", "gt", "category", "ok"),
    [
        ("Yes.", "Yes, Region [0] is to the left of Region [1].", "left_predicate", True),
        ("No.", "Yes, Region [0] is to the left of Region [1].", "left_predicate", False),
        ("Region [0] is not on the left of Region [1].", "No.", "left_predicate", True),
        ("Region [0] isn't taller than Region [1].", "That is False.", "tall_predicate", True),
        ("Region [0] is less tall than Region [1].", "Yes, it is.", "tall_predicate", False),
        (
            "In fact, Region [0] is to the right of Region [1].",
            "Incorrect, Region [0] is not on the left side.",
            "left_predicate",
            True,
        ),
        (
            "Correct, you'll find Region [0] to the left.",
            "Incorrect, Region [0] is not on the left side.",
            "left_predicate",
            False,
        ),
        ("No, Region [0] is closer to the viewer.", "That is True.", "behind_predicate", False),
        (
            "Actually, Region [0] might be smaller.",
            "No, Region [0] is not bigger than Region [1].",
            "big_predicate",
            True,
        ),
        (
            "It is wider.",
            "Incorrect, Region [0]'s width is not less than Region [1]'s.",
            "thin_predicate",
            True,
        ),
    ],
)
def test_predicates_yes_no_and_negation(pred, gt, category, ok):
    assert score_qualitative(pred, gt, category)["success"] is ok


def test_predicate_with_the_subject_swapped():
    q = "Is the red box to the left of the blue ball?"
    gt = "Yes, the red box is to the left of the blue ball."
    assert score_qualitative("The blue ball is to the right of the red box.", gt, "left_predicate", q)[
        "success"
    ]
    assert not score_qualitative("The blue ball is to the left of the red box.", gt, "left_predicate", q)[
        "success"
    ]


@pytest.mark.parametrize(
    ("pred", "ok"),
    [
        ("The red box.", True),
        ("The red box is taller than the blue ball.", True),
        ("The blue ball is shorter.", True),  # names the other object with the opposite relation
        ("The blue ball.", False),
        ("The blue ball is taller than the red box.", False),
        ("The red box is shorter.", False),
        # the compared objects named first: an article between "between"/"and"/"to" and a name keeps it a
        # reference, so the object the sentence is about decides (before, the first object named did)
        ("Between the red box and the blue ball, the red box is taller.", True),
        ("Between the red box and the blue ball, the blue ball is taller.", False),
        ("Compared to the blue ball, the red box is taller.", True),
        ("Compared to the red box, the blue ball is taller.", False),
    ],
)
def test_choice_picks_the_same_object(pred, ok):
    q = "Which is taller, the red box or the blue ball?"
    assert score_qualitative(pred, "The red box is taller.", "tall_choice", q)["success"] is ok


def test_choice_with_regions_as_in_spatialrgpt_bench():
    q = "Which is above, Region [0] or Region [1]?"
    assert score_qualitative("Region [0] is below Region [1].", "Region [1] is above.", "above_choice", q)[
        "success"
    ]
    assert not score_qualitative("Region [0] is higher up.", "Region [1] is above.", "above_choice", q)[
        "success"
    ]
    q = "Who is taller, Region [0] or Region [1]?"
    gt = "With more height is Region [0]."
    assert not score_qualitative("Standing taller between the two is Region [1].", gt, "tall_choice", q)[
        "success"
    ]


def test_plain_yes_no():
    assert score_qualitative("Yes, it is.", "yes", None)["success"]
    assert not score_qualitative("No, it isn't.", "Yes", None)["success"]


# -------------------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize(
    ("pred", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B) right", "B"),
        ("Answer: B", "B"),
        ("The answer is (C).", "C"),
        ("upper left", "C"),  # the option text
        ("It is on the right.", "B"),
        ("A", "A"),
        ("The answer is a chair", None),  # "a" is an article
    ],
)
def test_multiple_choice_letter(pred, letter):
    assert parse_choice(pred, ["left", "right", "upper left", "below"]) == letter


def test_multiple_choice_score():
    assert score_multiple_choice("(B) right", "B", ["left", "right"])["success"]
    assert score_multiple_choice("Answer: A", "(A)", ["left", "right"])["success"]
    assert not score_multiple_choice("A", "B", ["left", "right"])["success"]


# ------------------------------------------------------------------------------------ answers and scores


def _answers() -> list[dict]:
    quan = {"type": "quantitative", "category": "distance_data"}
    width = {"type": "quantitative", "category": "width_data"}
    direction = {"type": "quantitative", "category": "direction"}
    left = {"type": "qualitative", "category": "left_predicate"}
    tall = {"type": "qualitative", "category": "tall_choice"}
    return [
        {"question_id": "q0", "pred": "about 2.5 meters", "gt": "250 cm", "qa_info": quan},  # ok
        {"question_id": "q1", "pred": "10 feet", "gt": "1.5 m", "qa_info": quan},  # fail
        {"question_id": "q2", "pred": "0.9 m", "gt": "The width is 1 meter.", "qa_info": width},  # ok
        {"question_id": "q3", "pred": "no idea", "gt": "1 meter", "qa_info": width},  # fail, unparsed
        {"question_id": "q4", "pred": "4 o'clock", "gt": "3 o'clock", "qa_info": direction},  # ok
        {"question_id": "q5", "pred": "6 o'clock", "gt": "3 o'clock", "qa_info": direction},  # fail
        {"question_id": "q6", "pred": "the red box is on the left", "gt": "left", "qa_info": left},  # ok
        {"question_id": "q7", "pred": "No, it is on the right.", "gt": "Yes.", "qa_info": left},  # fail
        {
            "question_id": "q8",
            "question": "Which is taller, the red box or the blue ball?",
            "pred": "The blue ball is shorter.",
            "gt": "The red box is taller.",
            "qa_info": tall,
        },  # ok
    ]


def test_score_answers_writes_scores_and_plot(tmp_path):
    path = tmp_path / "answers.jsonl"
    for record in _answers():
        append_answer(path, record)
    result = score_answers(path, "spatialrgpt")
    scores = result["scores"]
    assert set(scores) == {"by_type", "by_category", "overall"}
    assert scores["overall"]["n"] == 9 and scores["overall"]["score"] == pytest.approx(5 / 9)
    # direction items have type "quantitative" in SpatialRGPT-Bench, as in the reference
    assert scores["by_type"]["quantitative"]["score"] == pytest.approx(3 / 6)
    assert scores["by_type"]["qualitative"]["score"] == pytest.approx(2 / 3)
    cats = scores["by_category"]
    assert cats["distance_data"]["score"] == 0.5
    assert cats["distance_data"]["mean_rel_error"] == pytest.approx((0 + (3.048 - 1.5) / 1.5) / 2)
    assert cats["width_data"]["score"] == 0.5 and cats["width_data"]["unparsed"] == 1
    assert cats["direction"]["score"] == 0.5
    assert cats["left_predicate"]["score"] == 0.5 and cats["left_predicate"]["group"] == "left/right"
    assert cats["tall_choice"]["score"] == 1.0
    assert json.loads((tmp_path / "scores.json").read_text()) == json.loads(json.dumps(scores))
    png = tmp_path / "scores.png"
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "left_predicate" in result["table"] and "55.6" in result["table"]


def test_truncated_last_line_is_skipped_and_cut_before_appending(tmp_path):
    path = tmp_path / "answers.jsonl"
    records = _answers()[:3]
    for record in records[:2]:
        append_answer(path, record)
    with open(path, "a") as f:  # a run killed mid-write
        f.write(json.dumps(records[2])[:25])
    assert [r["question_id"] for r in read_answers(path)] == ["q0", "q1"]
    append_answer(path, records[2])  # the resumed run answers q2 again
    assert [r["question_id"] for r in read_answers(path)] == ["q0", "q1", "q2"]


def test_a_broken_middle_line_is_an_error(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": "q0"\n{"question_id": "q1", "pred": "", "gt": ""}\n')
    with pytest.raises(SgeoError, match="line 1"):
        read_answers(path)
    with pytest.raises(SgeoError, match="not found"):
        read_answers(tmp_path / "missing.jsonl")


def test_aggregate_and_table_on_no_rel_error():
    scores = aggregate([{"success": True, "qa_info": {"type": "qualitative", "category": "yes_no"}}])
    assert scores["overall"] == {"n": 1, "score": 1.0, "correct": 1}
    assert "yes_no" in format_table(scores)


# ------------------------------------------------------------------------------------------- benchmarks


def _rgpt_row(i: int, **image) -> dict:
    categories = [
        ("quantitative", "height_data"),
        ("quantitative", "direction"),
        ("qualitative", "left_choice"),
    ]
    qtype, category = categories[i]
    return {
        "id": f"item{i}",
        **image,
        "text_q": "Which is more to the left, Region [0] or Region [1]?",
        "qa_info": {"type": qtype, "category": category},
        "conversations": [
            {
                "from": "human",
                "value": "<image>\nWhich is more to the left, <mask> <depth> or <mask> <depth>?",
            },
            {"from": "gpt", "value": "Region [0] is more to the left."},
        ],
        "bbox": [[0, 0, 10, 10], [5, 5, 20, 20]],
    }


def test_load_spatialrgpt_both_image_forms(tmp_path):
    rows = [
        _rgpt_row(0, file_path="sunrgbd/a.jpg"),
        _rgpt_row(1, image_info={"file_path": "kitti/b.png", "height": 10, "width": 20}),
        _rgpt_row(2, file_path="c.jpg"),
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(rows))
    items = load_benchmark("spatialrgpt", path)
    assert [it.image for it in items] == ["sunrgbd/a.jpg", "kitti/b.png", "c.jpg"]
    question = "Which is more to the left, Region [0] or Region [1]?"
    assert [it.prompt for it in items] == [
        f"{question}\n{QUANTITATIVE_SUFFIX}",
        f"{question}\n{DIRECTION_SUFFIX}",
        f"{question}\n{QUALITATIVE_SUFFIX}",
    ]
    assert all("<image>" not in it.prompt and "<mask>" not in it.prompt for it in items)
    assert items[0].gt == "Region [0] is more to the left." and items[0].extra["bbox"][1] == [5, 5, 20, 20]
    assert items[2].qa_info == {"type": "qualitative", "category": "left_choice"} and items[2].options is None
    jsonl = tmp_path / "bench.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_benchmark("spatialrgpt", jsonl) == items
    # the record written for an item is what the scorer needs
    assert score_item(items[2].to_record("Region [1] is more to the right."))["success"]


def test_synthetic_bench_reads_the_human_turn_and_the_bench_folder(tmp_path):
    (tmp_path / "eval").mkdir()
    row = {
        "id": "0",
        "file_path": "images/000000.png",
        "text_q": "Is the red box to the left of the blue ball?",
        "qa_info": {"category": "left_predicate", "type": "qualitative"},
        "conversations": [
            {"from": "human", "value": "<image>\nIs the red box to the left of the blue ball?"},
            {"from": "gpt", "value": "Yes, the red box is to the left of the blue ball."},
        ],
    }
    (tmp_path / "eval" / "bench.json").write_text(json.dumps([row]))
    (item,) = load_benchmark("synthetic", tmp_path)
    assert image_root("synthetic", tmp_path) == tmp_path / "eval"
    assert item.prompt == f"Is the red box to the left of the blue ball?\n{QUALITATIVE_SUFFIX}"
    assert item.image == "images/000000.png" and item.extra["question"] == row["text_q"]


def test_load_errors(tmp_path):
    with pytest.raises(SgeoError, match="known: " + ", ".join(sorted(REGISTRY))):  # every registered one
        load_benchmark("nope", tmp_path / "x.json")
    with pytest.raises(SgeoError, match="not found"):
        load_benchmark("spatialrgpt", tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SgeoError, match="neither JSON nor JSONL"):
        load_benchmark("spatialrgpt", bad)
    bad.write_text(
        json.dumps([{"id": "x", "text_q": "q?", "qa_info": {"type": "qualitative", "category": "c"}}])
    )
    with pytest.raises(SgeoError, match="item 0 .*file_path") as error:
        load_benchmark("spatialrgpt", bad)
    assert "\n" not in str(error.value)
