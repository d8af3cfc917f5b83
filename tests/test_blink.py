"""BLINK as published (a folder per subtask, val parquet with up to four embedded images per item), its spatial
subtasks, asked with every image, scored by its authors' rules (their GPT-3.5 option matcher through --judge)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmark_layouts import BLINK_ROWS, write_blink
from sgeo.benchmarks import build_prompt, decoding_for, image_root, load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.eval import prompt_text
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer, read_answers
from sgeo.scoring import ChatJudge
from sgeo.scoring.blink import blink_prediction, matcher_prompt, score_blink

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SPATIAL = ["Relative_Depth", "Spatial_Relation", "Multi-view_Reasoning", "Object_Localization", "Counting"]


def test_the_repository_folder_gives_the_spatial_subtasks_val_items(tmp_path):
    items = load_benchmark("blink", write_blink(tmp_path))
    expected = [row["idx"] for task in SPATIAL for row in BLINK_ROWS[task]]
    assert [it.question_id for it in items] == expected  # Art_Style (not spatial) and the test files left out
    root = image_root("blink", tmp_path)
    multi = next(it for it in items if it.qa_info["category"] == "Multi-view_Reasoning")
    row = BLINK_ROWS["Multi-view_Reasoning"][0]
    assert len(multi.images) == 2  # image_3, image_4 are null
    assert [(root / p).read_bytes() for p in multi.images] == [
        row["image_1"]["bytes"],
        row["image_2"]["bytes"],
    ]
    assert multi.gt == "(A)" and multi.options == ["left", "right"]
    # a subtask folder, or one file, loads as given (Art_Style too)
    art = load_benchmark("blink", tmp_path / "Art_Style")
    assert [it.question_id for it in art] == ["val_Art_Style_1"] and len(art[0].images) == 3


def test_hidden_test_answers_and_other_layouts_are_refused(tmp_path):
    write_blink(tmp_path)
    with pytest.raises(SgeoError, match="BLINK's test answers are hidden .* pass the val files"):
        load_benchmark("blink", tmp_path / "Counting" / "test-00000-of-00001.parquet")
    (tmp_path / "other").mkdir()
    with pytest.raises(SgeoError, match="holds no <subtask>/val-\\*.parquet of BLINK's spatial subtasks"):
        load_benchmark("blink", tmp_path / "other")


def test_reference_prompt_shows_every_image_then_the_prompt(tmp_path):
    items = {it.question_id: it for it in load_benchmark("blink", write_blink(tmp_path))}
    multi = items["val_Multi-view_Reasoning_1"]
    prompt = build_prompt(multi, "blink", "reference")
    row = BLINK_ROWS["Multi-view_Reasoning"][0]
    assert prompt_text(prompt) == f"{VICUNA} USER: <image>\n<image>\n{row['prompt']} ASSISTANT:"
    assert prompt.images == tuple(multi.images)
    tiled = build_prompt(multi, "blink", "reference", multi_image="tile")
    assert tiled.human.count("<image>") == 1 and tiled.tile
    reference = decoding_for("blink", "reference")
    assert (reference.sample, reference.max_new_tokens) == (False, 1024)  # their temperature 0.0, max_tokens


@pytest.mark.parametrize(
    ("pred", "prediction"),
    [
        ("B", "(B)"),
        ("(B)", "(B)"),
        ("I think (B) is right", "(B)"),  # the one mark among the words
        ("(A) looks close, but\n\nthe answer is (B)", "(B)"),  # several: the one of the last paragraph
        ("E", "(E)"),  # a lone letter A-E, whatever the options
        ("(C)", "(C)"),
        ("B. right", None),  # "B." is no mark: their GPT-3.5 matcher's
        ("right", None),  # the option's text
        ("Yes.", None),
        ("The answer is (B).", None),  # "(B)." is not the word "(B)"
        ("(A) or (B)", None),
        ("", None),
    ],
)
def test_answers_read_by_the_authors_rules(pred, prediction):
    assert blink_prediction(pred, 2) == prediction
    result = score_blink({"pred": pred, "gt": "(B)", "options": ["left", "right"]})
    assert result["success"] == (prediction == "(B)") and result.get("unmatched", False) == (
        prediction is None
    )


def test_blink_accuracy_is_the_mean_of_its_subtasks(tmp_path):
    items = load_benchmark("blink", write_blink(tmp_path / "blink"))
    answers = tmp_path / "run" / "answers.jsonl"
    answers.parent.mkdir()
    for item in items:  # right: Relative_Depth 1 of 2, Counting 1 of 1; the rest wrong
        pred = {"val_Relative_Depth_1": "A", "val_Counting_1": "(C)"}.get(item.question_id, "(Z)")
        append_answer(answers, item.to_record(pred))
    scores = score_answers(answers, "blink")["scores"]
    assert scores["by_category"]["Relative_Depth"]["score"] == 0.5
    # evaluate.py: the mean of the five subtasks' accuracies (0.5 + 0 + 0 + 0 + 1) / 5, not 2 of 6 items
    assert scores["benchmark"]["headline"]["BLINK accuracy (mean over subtasks)"] == pytest.approx(0.3)
    assert "note" in scores["benchmark"]  # "(Z)" names no option: their code would ask GPT-3.5


class _Matcher(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint answering BLINK's matcher prompt with the option it names."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        reply = "(B)" if "right" in body["messages"][0]["content"].rsplit("Answer: ", 1)[1] else "(Z)"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_unmatched_answers_go_to_the_judge_with_their_matcher_prompt(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Matcher)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        items = {it.question_id: it for it in load_benchmark("blink", write_blink(tmp_path / "blink"))}
        item = items["val_Spatial_Relation_1"]  # options yes / no, answer (B)
        answers = tmp_path / "run" / "answers.jsonl"
        answers.parent.mkdir()
        append_answer(answers, item.to_record("No, it is to the right of it."))  # no mark: the matcher's
        append_answer(answers, items["val_Counting_1"].to_record("(C)"))  # the rules decide: not asked
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        scores = score_answers(answers, "blink", judge=ChatJudge(url, "gpt-3.5-turbo"))["scores"]
        assert scores["overall"]["correct"] == 2 and "note" not in scores["benchmark"]
        (request,) = server.requests
        # multiple_choice.py: one user message, temperature 0, free text (no JSON response format)
        assert request["model"] == "gpt-3.5-turbo" and request["temperature"] == 0
        assert "response_format" not in request
        question = "Is the car beneath the cat?\nSelect from the following choices"
        expected = matcher_prompt(question, "(A) yes\n(B) no", "No, it is to the right of it.")
        assert request["messages"] == [{"role": "user", "content": expected}]
        assert expected.endswith(
            "Example 4: \nQuestion: Is the car beneath the cat?\nSelect from the following choices?\n"
            "Options: (A) yes\n(B) no\n(Z) Failed\nAnswer: No, it is to the right of it.\nYour output: "
        )
        assert read_answers(answers)[0]["judge"]["reply"] == "(B)"  # cached: a rescore asks nothing
        score_answers(answers, "blink", judge=ChatJudge(url, "gpt-3.5-turbo"))
        assert len(server.requests) == 1
    finally:
        server.shutdown()
        server.server_close()
