"""MM-Vet as released (mm-vet.json + images/), asked as LLaVA-1.5's mmvet.sh asks, graded by its authors' GPT-4
grader through --judge (required: it has no rules), with mm-vet_evaluator.py's retries and breakdown."""

from __future__ import annotations

import pytest

from benchmark_layouts import MMVET_ITEMS, scripted_judge, write_mmvet
from conftest import assert_one_line_error, run_sgeo_batch
from sgeo.benchmarks import build_prompt, decoding_for, image_root, load_benchmark
from sgeo.jobs.eval import prompt_text
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer, read_answers
from sgeo.scoring import ChatJudge
from sgeo.scoring.mmvet import GRADER_PROMPT, RETRY_SUFFIX, grader_query, read_grade

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_loads_with_own_ids_images_and_capabilities(tmp_path):
    folder = write_mmvet(tmp_path)
    items = load_benchmark("mm-vet", folder)
    assert [it.question_id for it in items] == list(MMVET_ITEMS)
    assert items[0].image == "images/v1_0.png" and (image_root("mm-vet", folder) / items[0].image).is_file()
    assert [it.qa_info["category"] for it in items] == ["math_ocr", "rec_spat", "gen_know_rec"]
    assert load_benchmark("mm-vet", folder / "mm-vet.json")[0].gt == "-1<AND>-5"
    prompt = prompt_text(build_prompt(items[1], "mm-vet", "reference"))
    assert prompt == f"{VICUNA} USER: <image>\nWhich animal is on the left of the picture? ASSISTANT:"
    assert decoding_for("mm-vet", "reference").max_new_tokens == 1024


def test_the_grader_query_is_mm_vets():
    query = grader_query("What is x in the equation?", "-1<AND>-5", "x = 3")
    assert query == GRADER_PROMPT + "\nWhat is x in the equation? | -1 <AND> -5 | x = 3 | "
    assert GRADER_PROMPT.startswith(
        "Compare the ground truth and prediction from AI models, to give a correctness"
    )
    assert GRADER_PROMPT.endswith("physical characteristics. | 1.0\n")
    assert [read_grade(c) for c in ("0.7", "1.0 because", "1.5", "high", "")] == [0.7, 1.0, None, None, None]


def _answers(tmp_path, preds):
    items = load_benchmark("mm-vet", write_mmvet(tmp_path / "data"))
    path = tmp_path / "run" / "answers.jsonl"
    path.parent.mkdir()
    for item, pred in zip(items, preds, strict=True):
        append_answer(path, item.to_record(pred))
    return path


def test_grades_retries_and_breakdown_as_mm_vet_evaluator(tmp_path):
    answers = _answers(tmp_path, ["x = -1", "a cat", "no idea"])
    replies = {"x = -1": ["0.5"], "a cat": ["sure", "1.0"], "no idea": ["?"] * 6}

    def reply(body):
        pred = body["messages"][0]["content"].removesuffix(RETRY_SUFFIX).split(" | ")[-2]
        return replies[pred].pop(0)

    with scripted_judge(reply) as judge:
        result = score_answers(answers, "mm-vet", judge=ChatJudge(judge.url, "gpt-4-0613"))
        requests = list(judge.requests)
        # cached by the first query: a rescore asks nothing
        score_answers(answers, "mm-vet", judge=ChatJudge(judge.url, "gpt-4-0613"))
        assert len(judge.requests) == len(requests)
    assert all(r["model"] == "gpt-4-0613" and r["max_tokens"] == 3 for r in requests)
    assert all("response_format" not in r for r in requests)
    # "a cat": the first reply unreadable, then the retry prompt at temperature 0.0
    cat = [r for r in requests if "| a cat |" in r["messages"][0]["content"]]
    assert [r["temperature"] for r in cat] == [0.0, 0.0]
    assert cat[1]["messages"][0]["content"].endswith(" | a cat | " + RETRY_SUFFIX)
    # "no idea": five retries at temperatures 0.0 .. 2.0, the sixth reply never read: 0.0
    idea = [r["temperature"] for r in requests if "| no idea |" in r["messages"][0]["content"]]
    assert idea == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
    scores = result["scores"]
    assert [r["judge"]["score"] for r in read_answers(answers)] == [0.5, 1.0, 0.0]
    summary = scores["benchmark"]
    assert summary["headline"]["MM-Vet total (points of 100)"] == pytest.approx(50.0)
    table = summary["tables"]["by capability"]
    assert (
        table["math"]["score %"] == 50.0
        and table["spat"]["score %"] == 100.0
        and table["gen"]["score %"] == 0.0
    )
    assert scores["by_category"]["rec_spat"]["score"] == 1.0  # the capability integration


def test_without_a_judge_it_is_refused_before_any_work(tmp_path):
    folder = write_mmvet(tmp_path / "data")
    out = tmp_path / "out"
    (result,) = run_sgeo_batch(
        [["eval", "--bench", "mm-vet", "--data", folder, "--out", out, "--model", "tiny"]]
    )
    assert_one_line_error(result, "MM-Vet is scored by a judge only", "pass --judge URL")
    assert not out.exists()
