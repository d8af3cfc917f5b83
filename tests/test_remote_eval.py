"""`sgeo eval --model openai:NAME --endpoint URL`: a model behind an OpenAI-compatible API answers a benchmark.

Against a real `sgeo serve` subprocess (the tiny preset) and against small real HTTP servers on 127.0.0.1 that
answer 429 / 503 / 401 the way busy or misconfigured endpoints do; no mocks.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import assert_one_line_error, run_sgeo, run_sgeo_batch, serving
from sgeo.benchmarks import load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.eval import EvalConfig, run_eval


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_dir):
    """`sgeo serve --model tiny --port 0` (loopback, so no key needed); yields its base URL."""
    work = tmp_path_factory.mktemp("remote_serve")
    with serving(["--model", "tiny", "--max-new-tokens", "8"], work) as (url, _):
        yield url


def test_eval_of_a_served_model_records_each_item_and_resumes(served, synthetic_root, tmp_path):
    bench = synthetic_root / "eval" / "bench.json"
    ids = [item.question_id for item in load_benchmark("synthetic", bench)]
    out = tmp_path / "remote"
    args = ["eval", "--bench", "synthetic", "--data", synthetic_root, "--out", out,
            "--model", "openai:tiny", "--endpoint", served, "--max-new-tokens", "6"]  # fmt: skip
    first = run_sgeo(*args, "--limit", "4", check=True)
    records = _lines(out / "answers.jsonl")
    # the item's own ids, in any order (answers are written as they arrive)
    assert sorted(r["question_id"] for r in records) == sorted(ids[:4]), first.stderr[-2000:]
    assert all(isinstance(r["pred"], str) and "error" not in r for r in records), records
    assert {r["model"] for r in records} == {f"openai:tiny@{served}/v1"}
    assert any(r["pred"] for r in records), records  # the served model did answer
    scores = json.loads((out / "scores.json").read_text())
    assert scores["overall"]["n"] == 4 and (out / "scores.png").is_file()

    # a stopped run goes on where it stopped: only the new items are asked
    second = run_sgeo(*args, "--limit", "6", check=True)
    assert "4 already answered" in second.stdout and "2 to answer" in second.stdout, second.stdout
    records = _lines(out / "answers.jsonl")
    assert sorted(r["question_id"] for r in records) == sorted(ids[:6])
    assert json.loads((out / "scores.json").read_text())["overall"]["n"] == 6

    # the same folder with a local model: its answers would be mixed with the endpoint's
    third = run_sgeo(*args[:-6], "--model", "tiny", "--limit", "6")
    assert third.returncode == 2 and "another model" in third.stderr, third.stderr[-2000:]


class _Endpoint(ThreadingHTTPServer):
    """A chat endpoint on 127.0.0.1 answering from a script: `statuses` are used in turn for each POST, then
    200 with the answer "left"; every request's headers and body are kept."""

    daemon_threads = True

    def __init__(self, statuses: list[int], retry_after: str | None = "0"):
        self.statuses, self.retry_after = list(statuses), retry_after
        self.seen, self.lock = [], threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.seen.append((self.path, dict(self.headers), body))
            status = server.statuses.pop(0) if server.statuses else 200
        if status == 200:
            reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "left"}}]}
        else:
            reply = {"error": {"message": f"scripted {status}", "type": "test"}}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status != 200 and server.retry_after is not None:
            self.send_header("Retry-After", server.retry_after)
        self.end_headers()
        self.wfile.write(data)


def _config(root, out, endpoint, **kw) -> EvalConfig:
    return EvalConfig(data=root, out=out, bench="synthetic", model="openai:gpt-test", endpoint=endpoint, **kw)


def test_a_429_is_retried_after_retry_after_and_the_key_is_sent(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    endpoint = _Endpoint([429, 503])
    try:
        result = run_eval(
            _config(synthetic_root, tmp_path / "out", endpoint.url, limit=2, concurrency=2), quiet=True
        )
    finally:
        endpoint.shutdown()
    # two items, two refusals retried: four requests, and both answers are the endpoint's
    assert len(endpoint.seen) == 4
    records = _lines(tmp_path / "out" / "answers.jsonl")
    assert [r["pred"] for r in records] == ["left", "left"] and not any("error" in r for r in records)
    assert result["scores"]["overall"]["n"] == 2
    for path, headers, body in endpoint.seen:
        assert path == "/v1/chat/completions"
        assert headers["Authorization"] == "Bearer sk-test-key"
        assert body["model"] == "gpt-test" and body["temperature"] == 0  # the sgeo protocol is greedy
        parts = body["messages"][-1]["content"]
        kinds = [p["type"] for p in parts]
        assert kinds == ["image_url", "text"], parts  # the image where the turn's <image> was
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "sk-test-key" not in (tmp_path / "out" / "answers.jsonl").read_text()


def test_an_endpoint_that_stays_busy_stops_the_run_in_one_line_keeping_answers(synthetic_root, tmp_path):
    from sgeo.clients.openai_compatible import MAX_RETRIES

    # the first item is answered; the second meets 503 on every try
    endpoint = _Endpoint([200] + [503] * (MAX_RETRIES + 1))
    out = tmp_path / "out"
    try:
        with pytest.raises(SgeoError, match=r"HTTP 503.*tries.*rerun the same command"):
            run_eval(_config(synthetic_root, out, endpoint.url, limit=2, concurrency=1), quiet=True)
        assert len(_lines(out / "answers.jsonl")) == 1  # the answer before the stop is kept
        # the rerun asks only what is left, and finishes once the endpoint answers again
        result = run_eval(_config(synthetic_root, out, endpoint.url, limit=2, concurrency=1), quiet=True)
    finally:
        endpoint.shutdown()
    assert len(endpoint.seen) == 1 + (MAX_RETRIES + 1) + 1
    assert result["scores"]["overall"]["n"] == 2


def test_refusals_are_one_line(synthetic_root, tmp_path):
    wrong_key = _Endpoint([401] * 50)
    refuses_all = _Endpoint([400] * 50)
    data = ["--bench", "synthetic", "--data", str(synthetic_root), "--limit", "4"]
    try:
        results = run_sgeo_batch([
            ["eval", *data, "--out", tmp_path / "a", "--model", "openai:gpt-test"],
            ["eval", *data, "--out", tmp_path / "b", "--model", "tiny", "--endpoint", wrong_key.url],
            ["eval", *data, "--out", tmp_path / "c", "--model", "openai:x", "--endpoint", "ftp://host/v1"],
            ["eval", *data, "--out", tmp_path / "d", "--model", "tiny", "--concurrency", "4"],
            ["eval", *data, "--out", tmp_path / "e", "--model", "openai:x", "--endpoint", wrong_key.url,
             "--precision", "fp32"],
            ["eval", *data, "--out", tmp_path / "f", "--model", "openai:x", "--endpoint", wrong_key.url,
             "--concurrency", "1"],
            ["eval", *data, "--out", tmp_path / "g", "--model", "openai:x", "--endpoint", refuses_all.url,
             "--concurrency", "1"],
        ])  # fmt: skip
    finally:
        wrong_key.shutdown()
        refuses_all.shutdown()
    assert_one_line_error(results[0], "needs --endpoint")
    assert_one_line_error(results[1], "--endpoint applies to a model behind an API")
    assert_one_line_error(results[2], "not an http(s) URL")
    assert_one_line_error(results[3], "--concurrency applies")
    assert_one_line_error(results[4], "--precision applies to a local model")
    assert_one_line_error(results[5], "HTTP 401", "OPENAI_API_KEY")
    assert_one_line_error(results[6], "refused the first 3 items", "scripted 400")
    assert len(wrong_key.seen) == 1  # a wrong key is not retried, and no other item is asked


def test_retry_after_and_messages_follow_the_api():
    from email.utils import formatdate

    from sgeo.benchmarks import Prompt
    from sgeo.clients.openai_compatible import messages_for, retry_after

    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    assert 50 < retry_after(formatdate(time.time() + 60, usegmt=True)) <= 60  # the HTTP-date form
    # each "<image>" of the turn becomes its image, in order; the protocol's system prompt its own message
    prompt = Prompt("You are a judge.", "<image>\n<image>\nWhich is closer?", ("a.png", "b.png"))
    messages = messages_for(prompt, ["data:a", "data:b"])
    assert messages[0] == {"role": "system", "content": "You are a judge."}
    assert messages[1]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:a"}},
        {"type": "image_url", "image_url": {"url": "data:b"}},
        {"type": "text", "text": "Which is closer?"},
    ]
    # no system prompt of its own (the sgeo protocol): none is sent, the endpoint's model keeps its own
    assert [m["role"] for m in messages_for(Prompt(None, "<image>\nQ", ("a.png",)), ["u"])] == ["user"]
