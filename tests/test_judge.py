"""`--judge`: SpatialRGPT's GPT-4 scoring against an OpenAI-compatible endpoint (a small real HTTP server on
127.0.0.1 here), verdicts cached in the answers file, a one-line error when the endpoint is unreachable."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmark_fixtures import write_spatialrgpt
from conftest import run_sgeo
from sgeo.benchmarks import load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.score import score_answers
from sgeo.pipeline.answers import append_answer
from sgeo.scoring import ChatJudge

# scripts/srgpt/eval/evaluate_spatial_with_gpt4.py `evaluate_quan_dir_question`, its f-string filled in
DIRECTION_PROMPT = """
You should help me to evaluate the response given the question and the correct answer.
You need to extract the direction of the correct answer and response.
You should output two integers in clock directions, one for the answer, and one for the response.
The output should be in JSON format.


Example 1:
Question: If you are at Region [0], where will you find Region [1]?
Answer: Region [0] will find Region [1] around the 2 o'clock direction.
Response: If you are at Region [0], you will find Region [1] around the 2 o'clock direction.
"answer_direction": 2, "response_direction": 2

Example 2:
Question: If you are at Region [0], where will you find Region [1]?
Answer: Region [0] will find Region [1] around the 12 o'clock direction.
Response: If you are at Region [0], you will find Region [1] around the 11 o'clock direction.
"answer_direction": 12, "response_direction": 11

Your Turn:
Question: If you are at Region [0], where will you find Region [1]?
Answer: The lamp is at the 2 o'clock direction.
Response: {2 o'clock}

"""
# `evaluate_qual_question`: its head, then prompt_templates/left_predicate.txt with {question} filled, then
QUALITATIVE_HEAD = """
You should help me to evaluate the response given the question and the correct answer.
To mark a response, you should output a single integer between 0 and 1.
1 means that the response perfectly matches the answer.
0 means that the response is completely different from the answer.
The output should be in JSON format.

"""
LEFT_EXAMPLE_1 = """Example 1:
Question: Is Region [0] to the left of Region [1]?
Answer: Yes, Region [0] is to the left of Region [1].
Response: Indeed, Region [0] is positioned on the left side of Region [1].
"your_mark": 1"""

PREDS = {
    "d0": "{2 o'clock}",  # the reference's own answer format; gt 2 o'clock
    "q0": "1.4 meters",  # gt 1.5 m: within 25%
    "w0": "2 meters",  # gt 80 cm
    "l0": "Yes, the red chair is to the left of the lamp.",
    "t0": "The red chair is taller.",
}
EXPECTED = {"d0": True, "q0": True, "w0": False, "l0": True, "t0": False}


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that reads the "Your Turn" part of SpatialRGPT's prompts."""

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "judge-mini", "object": "model"}]})
        else:
            self._send(404, {"error": "no such path"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        if (
            self.path != "/v1/chat/completions"
            or server.fail_after is not None
            and server.served >= server.fail_after
        ):
            self._send(500, {"error": {"message": "judge overloaded"}})
            return
        server.requests.append(body)
        server.served += 1
        prompt = body["messages"][-1]["content"]
        turn = prompt[prompt.rindex("Your Turn:") :]
        answer = re.search(r"^Answer: (.*)$", turn, re.M).group(1)
        response = re.search(r"^Response: (.*)$", turn, re.M).group(1)
        if "clock directions" in prompt:
            hour = [int(re.search(r"(\d+) o'clock", t).group(1)) for t in (answer, response)]
            verdict = {"answer_direction": hour[0], "response_direction": hour[1]}
        elif "to meters" in prompt:
            metres = [
                float(m.group(1)) * (0.01 if "centi" in m.group(2) else 1.0)
                for m in (re.search(r"([\d.]+) (\w+)", t) for t in (answer, response))
            ]
            verdict = {"answer_in_meters": metres[0], "response_in_meters": metres[1]}
        else:
            verdict = {"your_mark": int(answer.strip().lower() == response.strip().lower())}
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(verdict)}}]}
        self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"], **reply})


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    server.requests, server.served, server.fail_after = [], 0, None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_lines(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _answers(tmp_path):
    items = load_benchmark("spatialrgpt", write_spatialrgpt(tmp_path))
    path = tmp_path / "out" / "answers.jsonl"
    path.parent.mkdir()
    for item in items:
        append_answer(path, item.to_record(PREDS[item.question_id]))
    append_answer(path, {**items[0].to_record(""), "question_id": "gone", "error": "unreadable image"})
    return path


def test_judge_scores_with_spatialrgpt_prompts_and_caches_its_verdicts(judge_server, tmp_path):
    answers = _answers(tmp_path)
    result = score_answers(answers, "spatialrgpt", judge=ChatJudge(_url(judge_server)))
    scored = {r["question_id"]: r for r in map(json.loads, _read_lines(result["files"]["scored"]))}
    assert {qid: scored[qid]["success"] for qid in EXPECTED} == EXPECTED
    assert scored["gone"]["success"] is False  # not answered: never sent to the judge
    assert result["scores"]["overall"]["n"] == 6 and result["scores"]["overall"]["correct"] == 3
    assert scored["q0"]["rel_error"] == pytest.approx(0.1 / (1.5 + 1e-4))  # their error: |r - a| / (a + 1e-4)
    requests = {r["messages"][-1]["content"]: r for r in judge_server.requests}
    assert len(judge_server.requests) == 5
    for body in judge_server.requests:
        assert body["model"] == "judge-mini" and body["response_format"] == {"type": "json_object"}
        assert body["messages"][0] == {
            "role": "system",
            "content": "You are a helpful assistant designed to output JSON.",
        }
    assert DIRECTION_PROMPT in requests
    # their script would have lost this item: "{2 o'clock}" breaks its second .format()
    assert scored["d0"]["reference_format_fails"] and result["scores"]["judge"]["reference_format_fails"] == 1
    left = next(text for text in requests if "left of the lamp" in text)
    assert left.startswith(QUALITATIVE_HEAD + LEFT_EXAMPLE_1)
    assert left.count("Question: Is Region [0] to the left of Region [1]?") == 6  # 5 examples + the turn
    assert left.endswith(
        "\n\nYour Turn:\nQuestion: Is Region [0] to the left of Region [1]?\n"
        f"Answer: Yes, the red chair is to the left of the lamp.\nResponse: {PREDS['l0']}\n    "
    )
    # the verdicts live in the answers file: rescoring asks nothing, even with the endpoint gone
    cached = [json.loads(line) for line in answers.read_text().splitlines()]
    assert sum("judge" in r for r in cached) == 5 and all(
        r["judge"]["model"] == "judge-mini" for r in cached[:5]
    )
    again = score_answers(answers, "spatialrgpt", judge=ChatJudge(f"http://127.0.0.1:{_free_port()}/v1"))
    assert again["scores"]["overall"] == result["scores"]["overall"] and len(judge_server.requests) == 5
    # without --judge, the rules score (offline) and the cached verdicts stay in the file
    rules = score_answers(answers, "spatialrgpt")
    assert rules["scores"]["overall"]["n"] == 6 and "judge" not in rules["scores"]
    assert answers.read_text().count('"judge"') == 5


def test_unreachable_judge_is_one_line_and_loses_nothing(judge_server, tmp_path):
    answers = _answers(tmp_path)
    before = answers.read_bytes()
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    result = run_sgeo("score", answers, "--bench", "spatialrgpt", "--judge", dead)
    assert result.returncode == 2
    assert (
        result.stderr.startswith(f"error: judge endpoint {dead} is unreachable")
        and result.stderr.count("\n") == 1
    )
    assert answers.read_bytes() == before

    # an endpoint that fails after two verdicts: those two are saved, the rest is asked on the next run
    judge_server.fail_after = 2
    with pytest.raises(SgeoError, match="answered HTTP 500: .*judge overloaded"):
        score_answers(answers, "spatialrgpt", judge=ChatJudge(_url(judge_server)))
    records = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in records] == ["d0", "q0", "w0", "l0", "t0", "gone"]
    assert sum("judge" in r for r in records) == 2
    judge_server.fail_after = None
    result = run_sgeo("score", answers, "--bench", "spatialrgpt", "--judge", _url(judge_server), check=True)
    assert judge_server.served == 5  # 2 before the failure + the 3 left
    scored = [json.loads(line) for line in (tmp_path / "out" / "scored.jsonl").read_text().splitlines()]
    assert {r["question_id"]: r["success"] for r in scored if r["question_id"] in EXPECTED} == EXPECTED
    assert "overall" in result.stdout


def test_judge_is_refused_for_spatialscore(tmp_path):
    answers = tmp_path / "answers.jsonl"
    append_answer(answers, {"question_id": "1", "pred": "A", "gt": "A", "qa_info": {"type": "multi-choice"}})
    with pytest.raises(SgeoError, match="SpatialScore's own scoring uses rules only"):
        score_answers(answers, "spatialscore", judge=ChatJudge("http://127.0.0.1:9/v1"))
    with pytest.raises(SgeoError, match="not an http"):
        ChatJudge("127.0.0.1:8000")


def test_the_judge_examples_are_the_published_template_files_shipped_with_the_package():
    """SpatialRGPT's prompt_templates/<category>.txt lie beside the module as published (read stripped, as its
    script reads them), and the package data names every one, so an installed sgeo has them too."""
    import fnmatch
    import re
    from pathlib import Path

    import sgeo
    from sgeo.scoring.judge_examples import EXAMPLES, TEMPLATES

    files = sorted(TEMPLATES.glob("*.txt"))
    assert [f.stem for f in files] == sorted(EXAMPLES) and len(files) == 13
    assert all(EXAMPLES[f.stem] == f.read_text(encoding="utf-8").strip() for f in files)
    assert EXAMPLES["left_predicate"].startswith(
        LEFT_EXAMPLE_1.replace("Is Region [0] to the left of Region [1]?", "{question}")
    )
    root = Path(sgeo.__file__).parent
    section = (root.parents[1] / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]
    globs = re.findall(r'"([^"]+)"', section[: section.index("\n[")])
    for f in files:
        assert any(fnmatch.fnmatch(f.relative_to(root).as_posix(), g) for g in globs), f
