"""`sgeo serve` on the tiny preset: a real server process, a real headless Chromium on its page, and real HTTP
calls to `/v1/chat/completions` (whole and streamed), bad requests included; plus the engine's streaming and
cancelling in process."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from conftest import run_sgeo
from sgeo.jobs.serve.engine import Engine
from sgeo.jobs.serve.examples import examples

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
QUESTION = "How far is the red box from the blue sphere?"
MAX_REQUEST_MB = 1


def _png(seed: int = 0, size: tuple[int, int] = (130, 90)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _messages(url: str, question: str = QUESTION) -> list[dict]:
    parts = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    """`sgeo serve --model tiny --port 0` in a subprocess; yields (base URL, process, image root, outside dir)."""
    work = tmp_path_factory.mktemp("serve")
    root, outside = work / "images", work / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "scene.png").write_bytes(examples()[1][0].read_bytes())  # a synthetic scene, as the page offers
    (outside / "secret.png").write_bytes(_png(2))
    (root / "link.png").symlink_to(outside / "secret.png")
    os.mkfifo(root / "pipe.png")  # a named pipe inside the root: opening it would block until a writer came
    log = work / "stdout.txt"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(work / "gradio")}  # the page's upload folder, for the tests to read
    with open(log, "w") as stdout, open(work / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sgeo.cli", "serve", "--model", "tiny", "--port", "0",
             "--image-root", str(root), "--max-request-mb", str(MAX_REQUEST_MB), "--max-new-tokens", "24"],
            stdout=stdout, stderr=stderr, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "sgeo serve: http://" not in log.read_text():
            if process.poll() is not None:
                raise AssertionError(
                    f"sgeo serve exited {process.returncode}:\n{(work / 'stderr.txt').read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("sgeo serve did not start in 180 s")
            time.sleep(0.2)
        url = log.read_text().split("sgeo serve: ")[1].split()[0].rstrip("/")
        yield url, process, root, outside
    finally:
        process.terminate()
        process.wait(timeout=30)


def _post(url: str, body: dict | None = None, raw: bytes | None = None, timeout: float = 60):
    """(status, response bytes) of a POST to /v1/chat/completions."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _alive(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
        return json.loads(response.read())["data"][0]["id"] == "tiny"


def test_listens_on_loopback_only(server):
    url, process, _, _ = server
    port = int(url.rsplit(":", 1)[1])
    listening = [c for c in psutil.Process(process.pid).net_connections("inet") if c.status == "LISTEN"]
    assert listening and {c.laddr.port for c in listening} == {port}
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}


def test_chat_completion_whole_and_streamed(server):
    url = server[0]
    request = {"model": "tiny", "messages": _messages(_data_url(_png())), "temperature": 0, "max_tokens": 12}
    status, body = _post(url, request)
    assert status == 200, body
    whole = json.loads(body)
    assert whole["object"] == "chat.completion" and whole["model"] == "tiny"
    choice = whole["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    usage = whole["usage"]
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["prompt_tokens"] > 64  # the tiny preset's 128 visual tokens are part of the prompt
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 12 else "stop")

    status, body = _post(url, {**request, "stream": True})
    assert status == 200
    events = [line for line in body.decode().split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len(chunks) >= 4  # the role, at least two pieces of text (the answer streams), the finish
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == choice["message"]["content"]  # greedy: the same answer, in pieces
    assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert chunks[-1]["usage"] == usage


def test_earlier_turns_are_part_of_the_prompt(server):
    url = server[0]
    first = _messages(_data_url(_png()))
    history = [*first, {"role": "assistant", "content": "About two metres."},
               {"role": "user", "content": "And the green cylinder?"}]  # fmt: skip
    counts = []
    for messages in (first, history):
        status, body = _post(url, {"messages": messages, "temperature": 0, "max_tokens": 4})
        assert status == 200, body
        counts.append(json.loads(body)["usage"]["prompt_tokens"])
    assert counts[1] > counts[0] + 8


def test_local_paths_inside_the_image_root(server):
    url, _, root, _ = server
    for image_url in ("scene.png", str(root / "scene.png"), (root / "scene.png").as_uri()):
        status, body = _post(url, {"messages": _messages(image_url), "max_tokens": 4})
        assert status == 200, (image_url, body)


def _bad_requests(root: Path, outside: Path) -> dict[str, tuple[int, dict | bytes]]:
    image = _data_url(_png())
    return {
        "no image": (400, {"messages": [{"role": "user", "content": QUESTION}]}),
        "non-image data URL": (400, {"messages": _messages(_data_url(b"hello, world", "text/plain"))}),
        "image data URL of no image": (400, {"messages": _messages(_data_url(b"not a png" * 20))}),
        "path outside the root": (403, {"messages": _messages("../outside/secret.png")}),
        "absolute path outside": (403, {"messages": _messages(str(outside / "secret.png"))}),
        "file URL outside": (403, {"messages": _messages((outside / "secret.png").as_uri())}),
        "symlink out of the root": (403, {"messages": _messages("link.png")}),
        "missing file": (400, {"messages": _messages("no-such.png")}),
        "remote URL": (400, {"messages": _messages("https://example.com/cat.png")}),
        "two images": (400, {"messages": [{"role": "user", "content": [
            {"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": image}},
            {"type": "image_url", "image_url": {"url": image}}]}]}),  # fmt: skip
        "ends with the assistant": (400, {"messages": [*_messages(image), {"role": "assistant", "content": "x"}]}),
        "temperature out of range": (400, {"messages": _messages(image), "temperature": 7}),
        "max_tokens zero": (400, {"messages": _messages(image), "max_tokens": 0}),
        "malformed JSON": (400, b'{"messages": [{"role": "user", '),
        "deeply nested JSON": (400, b"[" * 200_000 + b"]" * 200_000),
        "huge body": (413, json.dumps({"messages": _messages(_data_url(b"\x89PNG" * (MAX_REQUEST_MB * 2**19)))}).encode()),
    }  # fmt: skip


BAD = ["no image", "non-image data URL", "image data URL of no image", "path outside the root",
       "absolute path outside", "file URL outside", "symlink out of the root", "missing file", "remote URL",
       "two images", "ends with the assistant", "temperature out of range", "max_tokens zero", "malformed JSON",
       "deeply nested JSON", "huge body"]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, case):
    url, _, root, outside = server
    cases = _bad_requests(root, outside)
    assert list(cases) == BAD
    expected, request = cases[case]
    status, body = _post(url, raw=request) if isinstance(request, bytes) else _post(url, request)
    assert status == expected, body
    assert len(body.decode().strip().splitlines()) == 1
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type"} and error["message"] and "Traceback" not in error["message"]
    assert _alive(url)


def test_still_answers_after_bad_requests(server):
    status, body = _post(server[0], {"messages": _messages(_data_url(_png(3))), "max_tokens": 4})
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] is not None


def _gradio_call(url: str, api: str, data: list, timeout: float = 60) -> str:
    """Gradio's call API as a client script uses it: POST the inputs, then read the event stream to its end."""
    request = urllib.request.Request(
        f"{url}/gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call/{api}/{event_id}", timeout=timeout) as response:
        return response.read().decode()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_page_api_opens_no_file_a_client_names(server):
    """The attack: name a file in the page's call API, find its copy in Gradio's cache, download it."""
    url, _, root, outside = server
    secret = outside / "secret.txt"
    secret.write_bytes(f"sgeo secret {os.getpid()} {time.time()}".encode())
    gradio_files = root.parent / "gradio"  # the server's GRADIO_TEMP_DIR
    for path in (secret, outside / "secret.png", root / "scene.png", Path("/etc/hostname")):
        stream = _gradio_call(url, "send", ["q", {"path": str(path), "meta": {"_type": "gradio.FileData"}}, 0, 4])
        assert "event: complete" not in stream or str(path) not in stream, stream
        # every path the stream names (Gradio's error once named the copy it made) is not served
        for named in {w.strip("'\",.") for w in stream.split() if w.strip("'\",.").startswith("/")}:
            status, body = _get(f"{url}/gradio_api/file={named}")
            assert status >= 400 or body not in (secret.read_bytes(), Path("/etc/hostname").read_bytes())
        status, body = _get(f"{url}/gradio_api/file={path}")
        assert status >= 400, (path, status)
    copies = [f for f in gradio_files.rglob("*") if f.is_file()] if gradio_files.exists() else []
    assert not [f for f in copies if f.read_bytes() == secret.read_bytes()], copies
    assert not [f for f in copies if f.read_bytes() == (outside / "secret.png").read_bytes()], copies
    assert _alive(url)


def test_a_fifo_in_the_image_root_is_refused_without_blocking(server):
    url, _, root, _ = server
    for image_url in ("pipe.png", (root / "pipe.png").as_uri()):
        status, body = _post(url, {"messages": _messages(image_url), "max_tokens": 4}, timeout=30)
        assert status == 400 and "regular file" in json.loads(body)["error"]["message"], body
    stream = _gradio_call(url, "send", ["q", {"path": str(root / "pipe.png"), "meta": {"_type": "gradio.FileData"}}, 0, 4], timeout=30)  # fmt: skip
    assert "event: error" in stream or "event: complete" in stream
    assert _alive(url)


def _png16(side: int) -> bytes:
    """A 16-bit grayscale PNG of side x side zeros: a few hundred KB on disk, side*side*2 bytes decoded."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), dtype=np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_one_request_costs_bounded_memory(server):
    """The issue's 16-bit PNG just under the pixel limit (9459x9459): 200 KB sent, 2.3 GB decoded before."""
    url, process, _, _ = server
    data = _png16(9459)
    assert len(data) < MAX_REQUEST_MB * 2**20 * 3 // 4  # fits a request as base64
    server_process = psutil.Process(process.pid)
    before = server_process.memory_info().rss
    status, body = _post(url, {"messages": _messages(_data_url(data)), "max_tokens": 4}, timeout=120)
    grown = server_process.memory_info().rss - before
    assert status == 400 and "once decoded" in json.loads(body)["error"]["message"], body
    assert grown < 200 * 2**20, f"the server grew by {grown / 2**20:.0f} MB for one refused image"
    assert _alive(url)


def test_a_disconnecting_stream_client_leaves_no_error(server):
    url, _, root, _ = server
    request = {"messages": _messages(_data_url(_png(5))), "max_tokens": 24, "stream": True, "temperature": 0}
    for _ in range(3):
        connection = urllib.request.urlopen(
            urllib.request.Request(
                f"{url}/v1/chat/completions", data=json.dumps(request).encode(),
                headers={"Content-Type": "application/json"},
            ), timeout=60,
        )  # fmt: skip
        assert connection.readline().startswith(b"data: ")
        connection.close()  # gone mid-answer
    assert _alive(url)
    time.sleep(1)
    errors = (root.parent / "stderr.txt").read_text()
    assert "RuntimeError" not in errors and "cannot join" not in errors, errors


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")
def test_web_page_conversation_in_a_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _, root, _ = server
    bot, user = "#sgeo-chat [data-testid=bot]", "#sgeo-chat [data-testid=user]"

    def wait_for_answers(page, n: int) -> list[str]:
        page.wait_for_function(
            """([selector, n]) => {
                const answers = document.querySelectorAll(selector);
                const tracker = document.querySelector('#sgeo-chat [data-testid=status-tracker]');
                const failed = document.querySelector('.toast-body.error, .toast-body.warning');
                return failed || answers.length === n && answers[n - 1].innerText.trim().length > 0
                    && (!tracker || tracker.classList.contains('hide'));
            }""",
            arg=[bot, n], timeout=180_000,  # a hang guard, not a speed check: a loaded CI run once took >60 s
        )  # fmt: skip
        toasts = [t.inner_text() for t in page.query_selector_all(".toast-body.error, .toast-body.warning")]
        assert not toasts, toasts  # the page reported an error instead of answering
        return [a.inner_text().strip() for a in page.query_selector_all(bot)]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(f"{url}/")
            page.wait_for_selector("#sgeo-send", timeout=60_000)
            assert page.locator("text=Examples (synthetic scenes)").count() == 1

            page.set_input_files("#sgeo-image input[type=file]", str(root / "scene.png"))
            page.wait_for_selector("#sgeo-image img", timeout=30_000)
            page.fill("#sgeo-question textarea", QUESTION)
            page.click("#sgeo-send")
            first = wait_for_answers(page, 1)
            assert first[0]
            page.fill("#sgeo-question textarea", "And how tall is the blue sphere?")
            page.keyboard.press("Enter")
            answers = wait_for_answers(page, 2)  # the first turn stays: the conversation keeps its context
            assert answers[0] == first[0] and answers[1]
            assert [u.inner_text().strip() for u in page.query_selector_all(user)] == [
                QUESTION, "And how tall is the blue sphere?"
            ]  # fmt: skip
            shot = Path(os.environ.get("SGEO_SERVE_SCREENSHOT", tmp_path / "serve.png"))
            page.screenshot(path=str(shot), full_page=True)
            assert Image.open(shot).size[0] == 1280

            page.click("#sgeo-clear")
            page.wait_for_function(f"() => document.querySelectorAll('{bot}').length === 0", timeout=30_000)

            _, example_question = examples()[0]  # the page's examples: synthetic scenes in $SGEO_HOME
            # the examples table shortens long questions on screen: find the row by its first words
            page.get_by_text(example_question[:40]).first.click()
            page.wait_for_function(
                "q => document.querySelector('#sgeo-question textarea').value === q", arg=example_question
            )
            page.click("#sgeo-send")
            assert wait_for_answers(page, 1)[0]  # a new image: a new conversation of one turn
        finally:
            browser.close()
    assert _alive(url)


def test_reply_streams_pieces_that_join_to_the_answer(tiny):
    model, processor = tiny
    engine = Engine(model, processor, "tiny")
    chat = engine.open_chat(Image.open(io.BytesIO(_png())).convert("RGB"))
    reply = engine.reply(chat, QUESTION, temperature=0.0, max_new_tokens=40)
    pieces = list(reply)
    assert len(pieces) > 1 and all(pieces)
    assert "".join(pieces) == reply.answer and reply.tokens >= 1
    assert [t["from"] for t in chat.turns] == ["human", "gpt"] and chat.turns[1]["value"] == reply.answer


def test_closing_a_reply_stops_generation_and_keeps_no_turn(tiny):
    model, processor = tiny
    engine = Engine(model, processor, "tiny")
    chat = engine.open_chat(Image.open(io.BytesIO(_png())).convert("RGB"))
    pieces = iter(engine.reply(chat, QUESTION, temperature=0.0, max_new_tokens=1500))
    assert next(pieces)
    pieces.close()  # as when a browser tab or an HTTP client goes away
    assert (
        chat.turns == []
    )  # the question was not answered to the end, so the conversation has no trace of it
    assert engine.lock.acquire(blocking=False)  # released: the next request can run
    engine.lock.release()


def test_user_errors_are_one_line_before_any_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        results = {
            "--image-root": run_sgeo("serve", "--image-root", tmp_path / "missing"),
            "--port": run_sgeo("serve", "--port", port),
        }
    for option, result in results.items():
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and option in result.stderr
