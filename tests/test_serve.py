"""`sgeo serve` on the tiny preset: a real server process, a real headless Chromium on its page, and real HTTP
calls to `/v1/chat/completions` (whole and streamed), bad requests included; plus the engine's streaming and
cancelling in process. A second server (the demo preset, whose answers depend on token positions, so a
padding mistake in a batch changes them) has an API key and a small queue: the `openai` package as the client,
several requests at once, greedy answers against one-at-a-time `ImageChat` answers, 401 and 429."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from conftest import assert_one_line_error, run_sgeo, run_sgeo_batch, serving
from sgeo.jobs.serve.engine import Busy, Engine
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
    with serving(
        ["--model", "tiny", "--image-root", root, "--max-request-mb", MAX_REQUEST_MB, "--max-new-tokens", "24"],
        work, env={"GRADIO_TEMP_DIR": str(work / "gradio")},  # the page's upload folder, for the tests to read
    ) as (url, process):  # fmt: skip
        yield url, process, root, outside


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
        "stop not strings": (400, {"messages": _messages(image), "stop": ["a", 3]}),
        "system message not first": (400, {"messages": [*_messages(image)[:1], {"role": "assistant", "content": "x"},
                                                        {"role": "system", "content": "Be brief."}]}),
        "system message with an image": (400, {"messages": [{"role": "system", "content": _messages(image)[0]["content"]},
                                                            *_messages(image)]}),
        "malformed JSON": (400, b'{"messages": [{"role": "user", '),
        "deeply nested JSON": (400, b"[" * 200_000 + b"]" * 200_000),
        "huge body": (413, json.dumps({"messages": _messages(_data_url(b"\x89PNG" * (MAX_REQUEST_MB * 2**19)))}).encode()),
    }  # fmt: skip


BAD = ["no image", "non-image data URL", "image data URL of no image", "path outside the root",
       "absolute path outside", "file URL outside", "symlink out of the root", "missing file", "remote URL",
       "two images", "ends with the assistant", "temperature out of range", "max_tokens zero", "stop not strings",
       "system message not first", "system message with an image", "malformed JSON",
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
        stream = _gradio_call(
            url, "send", ["q", {"path": str(path), "meta": {"_type": "gradio.FileData"}}, 0, 4]
        )
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
    engine.close()


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
    deadline = time.monotonic() + 30  # a hang guard: the batch drops a cancelled row at its next step
    while engine.batcher.batch.rows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.batcher.batch.rows  # its generation has stopped, long before its 1500 tokens
    engine.close()


def test_the_defaults_ask_and_serve_share_are_declared_once():
    """`sgeo ask`'s and `sgeo serve`'s answer defaults, and the server's limits as `ServeConfig`, `Limits` and
    `Engine` each start from them, come from one declaration (a changed default cannot leave a copy behind)."""
    import inspect

    from sgeo.inference import options as answer
    from sgeo.jobs.ask import AskConfig
    from sgeo.jobs.serve import ServeConfig
    from sgeo.jobs.serve import defaults as serving
    from sgeo.jobs.serve.chat_request import Limits

    served, asked, limits = ServeConfig(), AskConfig(image=Path("x.png")), Limits()
    assert served.temperature == asked.temperature == limits.temperature == answer.TEMPERATURE
    assert served.max_new_tokens == asked.max_new_tokens == limits.max_tokens == answer.MAX_NEW_TOKENS
    assert limits.max_file_bytes == served.max_request_mb * serving.MIB
    assert limits.max_decoded_bytes == served.max_image_mb * serving.MIB
    engine = inspect.signature(Engine).parameters
    assert (engine["max_batch"].default, engine["max_queue"].default) == (served.max_batch, served.max_queue)


def test_a_slot_goes_back_once_and_a_reply_closed_before_it_starts_generates_nothing(tiny):
    """The engine's count of held places drops once per slot however often it is released (a reply closes it
    when its answer ends and again when its reader goes away); a reply closed unread never reaches the batch
    and gives its slot back."""
    from sgeo.jobs.serve.reply import Slot

    given_back = []
    slot = Slot(lambda: given_back.append(1))  # the engine's `give_back`, called on the first release only
    slot.release()
    slot.release()
    assert given_back == [1]
    model, processor = tiny
    engine = Engine(model, processor, "tiny", max_batch=1, max_queue=0)
    first = engine.admit()
    with pytest.raises(Busy):
        engine.admit()
    first.release()
    first.release()  # a second release gives back nothing more
    second = engine.admit()
    with pytest.raises(Busy):  # one place, held by `second`: the double release freed no extra one
        engine.admit()
    chat = engine.open_chat(Image.open(io.BytesIO(_png())).convert("RGB"))
    reply = engine.reply(chat, QUESTION, temperature=0.0, max_new_tokens=40, slot=second)
    reply.close()
    assert list(reply) == [] and reply.answer is None and chat.turns == []
    engine.admit().release()  # the closed reply gave its place back
    engine.close()


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


# -- API keys, the bounded queue and batched generation: a second server -----------------------------------------

KEY = "sgeo-test-key-0123456789"
MAX_BATCH, MAX_QUEUE = 2, 2  # four places: the tests below fill them exactly


@pytest.fixture(scope="module")
def demo(sgeo_home):
    """(model, processor) of the demo preset, fp32 on CPU, as the keyed server loads it."""
    from sgeo.model import load_model

    return load_model("demo")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, demo):
    """`sgeo serve --model demo` with its key from SGEO_API_KEY and room for 2 answers + 2 waiting;
    yields (base URL, process, work folder)."""
    work = tmp_path_factory.mktemp("serve_keyed")
    with serving(
        ["--model", "demo", "--max-batch", MAX_BATCH, "--max-queue", MAX_QUEUE, "--max-new-tokens", "24"],
        work, env={"SGEO_API_KEY": KEY, "GRADIO_TEMP_DIR": str(work / "gradio")},
    ) as (url, process):  # fmt: skip
        yield url, process, work


def _request(url: str, path: str, body: dict | None = None, headers: dict | None = None, timeout: float = 60):
    """(status, headers, body bytes) of a GET (no body) or a JSON POST."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}{path}", data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def _assert_json_error(body: bytes, kind: str) -> str:
    assert len(body.decode().strip().splitlines()) == 1, body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type"} and error["type"] == kind, error
    return error["message"]


def test_a_non_loopback_host_needs_a_key_refused_before_anything_starts():
    """Checked before the port is bound and before the model loads: a taken port and a model that does not
    exist would otherwise be the error."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # SGEO_API_KEY empty reads as unset, whatever key the caller's environment holds
        results = run_sgeo_batch([
            ["serve", "--host", "0.0.0.0", "--port", port, "--model", "no-such-model"],
            ["serve", "--host", "0.0.0.0", "--port", port, "--api-key", "k", "--no-auth"],
            ["serve", "--host", "0.0.0.0", "--port", port, "--api-key", "two words"],
            # with a key (or --no-auth) the host is accepted: the next check, the taken port, is the error
            ["serve", "--host", "0.0.0.0", "--port", port, "--api-key", "k", "--model", "no-such-model"],
            ["serve", "--host", "0.0.0.0", "--port", port, "--no-auth", "--model", "no-such-model"],
        ], env={"SGEO_API_KEY": ""})  # fmt: skip
    assert [r["code"] for r in results] == [2] * 5, results
    assert_one_line_error(results[0], "--host 0.0.0.0", "--api-key", "SGEO_API_KEY", "--no-auth")
    assert_one_line_error(results[1], "--api-key", "--no-auth")
    assert_one_line_error(results[2], "--api-key", "printable ASCII")
    assert_one_line_error(results[3], "--port")
    assert_one_line_error(results[4], "--port")


def test_the_api_wants_the_key(keyed_server):
    url = keyed_server[0]
    wrong = {"Authorization": f"Bearer {KEY}x"}
    for headers in ({}, wrong, {"Authorization": KEY}):
        for path, body in (
            ("/v1/models", None),
            ("/v1/chat/completions", {"messages": []}),
            ("/v1/nope", None),
        ):
            status, response_headers, response = _request(url, path, body, headers)
            assert status == 401, (headers, path, response)
            assert response_headers["WWW-Authenticate"] == "Bearer"
            message = _assert_json_error(response, "authentication_error")
            assert "Authorization: Bearer" in message and KEY not in message
    status, _, response = _request(url, "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200 and json.loads(response)["data"][0]["id"] == "demo"

    import openai

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="not-the-key", max_retries=0).models.list()


def test_the_page_wants_the_key_as_its_password(keyed_server):
    import http.cookiejar
    from urllib.parse import urlencode

    url = keyed_server[0]
    for path in ("/config", "/gradio_api/info", "/gradio_api/file=/etc/hostname"):
        assert _get(f"{url}{path}")[0] == 401, path
    status, _, _ = _request(url, "/gradio_api/call/send", {"data": ["q", None, 0, 4]})
    assert status == 401

    cookies = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def login(password: str) -> int:
        form = urlencode({"username": "anyone", "password": password}).encode()
        try:
            return cookies.open(f"{url}/login", data=form, timeout=30).status
        except urllib.error.HTTPError as error:
            return error.code

    assert login("wrong") == 400
    with pytest.raises(urllib.error.HTTPError):
        cookies.open(f"{url}/config", timeout=30)
    assert login(KEY) == 200
    assert cookies.open(f"{url}/config", timeout=30).status == 200


def _scene_images() -> list[bytes]:
    """PNGs of the page's synthetic scenes and random pixels: the images of the concurrent requests."""
    return [path.read_bytes() for path, _ in examples()[:2]] + [_png(11), _png(12, (60, 140))]


QUESTIONS = [
    "How far is the red box from the blue sphere?",
    "Which is taller?",
    "Is the cyan box to the left of the pink sphere, and how wide is it in centimeters?",
    "What colour is the floor?",
]


def _one_at_a_time(model_and_processor, images: list[bytes], max_tokens: list[int]) -> list[str]:
    """Today's answers: `sgeo ask`'s ImageChat, one question at a time, greedy."""
    from sgeo.inference.image_chat import ImageChat
    from sgeo.pipeline.images import decode_image

    model, processor = model_and_processor
    return [
        ImageChat(model, processor, decode_image(data)).ask(question, 0.0, n)["answer"]
        for data, question, n in zip(images, QUESTIONS, max_tokens, strict=True)
    ]


def test_openai_clients_at_once_get_the_one_at_a_time_greedy_answers(keyed_server, demo):
    """Through the `openai` package, plain and streamed: one long answer starts, then three clients at once
    join it (a row joins a running batch: caches of different lengths merged), two answered together, the
    others taking places as they free; answers of different lengths. All are the one-at-a-time answers."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import openai

    url = keyed_server[0]
    images, max_tokens = _scene_images(), [160, 20, 6, 11]
    expected = _one_at_a_time(demo, images, max_tokens)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
    started = threading.Event()

    def ask(i: int) -> tuple[str, dict | None]:
        messages = _messages(_data_url(images[i]), QUESTIONS[i])
        settings = {"model": "demo", "messages": messages, "temperature": 0, "max_tokens": max_tokens[i]}
        if i % 2 == 0:
            text, usage = "", None
            for chunk in client.chat.completions.create(**settings, stream=True):
                text += "".join(c.delta.content or "" for c in chunk.choices)
                usage = chunk.usage.model_dump() if chunk.usage else usage
                if text:
                    started.set()
            return text, usage
        completion = client.chat.completions.create(**settings)
        return completion.choices[0].message.content, completion.usage.model_dump()

    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        futures = [pool.submit(ask, 0)]
        assert started.wait(120)  # the long answer is being generated
        futures += [pool.submit(ask, i) for i in range(1, len(QUESTIONS))]
        answers = [future.result() for future in futures]
    assert [a for a, _ in answers] == expected
    assert len(set(expected)) == len(expected) and all(expected)
    for (_, usage), n in zip(answers, max_tokens, strict=True):
        assert usage is not None and 1 <= usage["completion_tokens"] <= n and usage["prompt_tokens"] > 64

    # a seed makes a sampled answer repeatable, whatever else is in the batch; greedy rows beside a sampled
    # one stay greedy
    sampled = {"model": "demo", "messages": _messages(_data_url(images[0])), "temperature": 1.0, "max_tokens": 12,
               "seed": 1234}  # fmt: skip
    alone = client.chat.completions.create(**sampled).choices[0].message.content
    with ThreadPoolExecutor(3) as pool:
        crowd = [
            pool.submit(ask, 1),
            pool.submit(client.chat.completions.create, **sampled),
            pool.submit(ask, 3),
        ]
        assert crowd[1].result().choices[0].message.content == alone
        assert [crowd[0].result()[0], crowd[2].result()[0]] == [expected[1], expected[3]]


def _ask_raw(url: str, body: dict) -> socket.socket:
    """POST `body` to /v1/chat/completions on a raw socket (with the API key); the caller reads or closes it."""
    data = json.dumps(body).encode()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=120)
    connection.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return connection


# a streamed answer that runs to its full length: with this image and question the demo model's greedy
# answer says no end-of-sequence token in 1800 tokens (seconds of generation)
LONG = {"messages": _messages(_data_url(_png(7))), "max_tokens": 1800, "stream": True, "temperature": 0}


def _open(url: str) -> tuple[int, dict, bytes, socket.socket | None]:
    """(status, headers, body, open connection) of a `LONG` request: an answered one is left open after its
    first event, holding its place; a refused one is read whole and closed."""
    connection = _ask_raw(url, LONG)
    head = b""
    while b"\r\n\r\n" not in head:
        head += connection.recv(1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    status = int(lines[0].split()[1])
    if status == 200:
        while b"data: " not in head:
            head += connection.recv(1)
        return status, headers, b"", connection
    body = b""
    while len(body) < int(headers["content-length"]):
        body += connection.recv(65536)
    connection.close()
    return status, headers, body, None


@contextlib.contextmanager
def _crowd(url: str, n: int):
    """`n` clients at once, each asking for a `LONG` answer; yields their `_open` results while the answered
    ones stay connected (their answers take seconds), and closes those at the end: the clients leave."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        crowd = list(pool.map(lambda _: _open(url), range(n)))
    try:
        yield crowd
    finally:
        for *_, connection in crowd:
            if connection is not None:
                connection.close()


def _until(check, seconds: float = 60) -> bool:
    """Whether `check()` came true, trying for up to `seconds` (a hang guard, not a speed check)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_past_the_queue_clients_get_429_and_a_client_that_leaves_frees_its_place(keyed_server):
    import openai

    url, _, work = keyed_server
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"messages": _messages(_data_url(_png(8))), "max_tokens": 4}
    places, clients = MAX_BATCH + MAX_QUEUE, 12

    def status() -> int:
        return _request(url, "/v1/chat/completions", body, auth)[0]

    with _crowd(url, clients) as crowd:
        codes = [code for code, *_ in crowd]
        assert set(codes) == {200, 429}, codes
        # the first four take the places; the rest are refused, but for any that came after a place was
        # given back (an answer ends seconds after it starts: no more than one more place in practice)
        assert places <= codes.count(200) <= 2 * places, codes
        for code, headers, response, _ in crowd:
            if code == 429:
                assert int(headers["retry-after"]) >= 1
                assert "busy" in _assert_json_error(response, "rate_limit_error")
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0).chat.completions.create(
                model="demo", **body
            )

    def all_free() -> bool:
        with _crowd(url, places) as crowd:
            return [code for code, *_ in crowd] == [200] * places

    # the clients have gone mid-answer: their generation stops and all four places free
    assert _until(all_free)
    # a client asking for a whole (not streamed) long answer leaves before it is written
    _ask_raw(url, {**LONG, "stream": False}).close()
    assert _until(lambda: status() == 200)
    errors = (work / "stderr.txt").read_text()
    assert "Traceback" not in errors, errors


def test_the_page_says_when_the_server_is_busy(keyed_server):
    import http.cookiejar
    from urllib.parse import urlencode

    url = keyed_server[0]
    cookies = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    cookies.open(f"{url}/login", data=urlencode({"username": "a", "password": KEY}).encode(), timeout=30)
    boundary = "sgeo-test-boundary"
    upload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="scene.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + _png(9)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    path = json.loads(cookies.open(urllib.request.Request(
        f"{url}/gradio_api/upload", data=upload,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}), timeout=30).read())[0]  # fmt: skip

    def ask() -> str:
        data = {"data": [QUESTION, {"path": path, "meta": {"_type": "gradio.FileData"}}, 0, 4]}
        request = urllib.request.Request(
            f"{url}/gradio_api/call/send", data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        event_id = json.loads(cookies.open(request, timeout=30).read())["event_id"]
        return cookies.open(f"{url}/gradio_api/call/send/{event_id}", timeout=60).read().decode()

    with _crowd(url, MAX_BATCH + MAX_QUEUE + 2) as crowd:
        assert [code for code, *_ in crowd].count(429) >= 1  # every place is taken
        busy = ask()
    assert "event: error" in busy and "busy" in busy, busy
    deadline = time.monotonic() + 60
    while "event: complete" not in (answer := ask()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "event: complete" in answer and "busy" not in answer, answer


def test_engine_batches_replies_read_at_once_and_answers_as_one_at_a_time(demo):
    """In process: replies read from several threads at once share steps of the model (a step runs more
    than one row) and give `ImageChat`'s greedy answers, in pieces that join to them; a second conversation
    about an image already seen is not encoded again."""
    from concurrent.futures import ThreadPoolExecutor

    from sgeo.pipeline.images import decode_image

    model, processor = demo
    images, max_tokens = _scene_images(), [9, 14, 5, 12]
    expected = _one_at_a_time(demo, images, max_tokens)
    engine = Engine(model, processor, "demo", max_batch=4, max_queue=0)
    try:
        chats = [engine.open_chat(decode_image(data)) for data in images]
        assert engine.encoder.encoded == len(images)
        replies = [engine.reply(c, q, 0.0, n) for c, q, n in zip(chats, QUESTIONS, max_tokens, strict=True)]
        with ThreadPoolExecutor(len(replies)) as pool:
            pieces = list(pool.map(list, replies))
        assert [r.answer for r in replies] == expected
        assert ["".join(p) for p in pieces] == expected
        assert engine.batcher.batch.widest >= 2
        engine.open_chat(decode_image(images[0]))
        assert engine.encoder.encoded == len(images)  # the features were kept
    finally:
        engine.close()


def test_rows_joining_and_leaving_a_running_batch_keep_one_at_a_time_answers(demo):
    """The batch itself, driven step by step: a row generating alone, two joining it after 60 steps (their
    caches merged with its much longer one, left-padded: padding that is not masked out changes their
    answers), one of them leaving early (the cache trimmed), a fourth joining later. Every answer is
    `ImageChat`'s greedy one."""
    import torch

    from sgeo.inference.image_chat import TEMPLATE
    from sgeo.model.continuous_batch import Batch
    from sgeo.model.conversation import IMAGE_TOKEN
    from sgeo.model.sequence import Sequence
    from sgeo.pipeline.images import decode_image

    model, processor = demo
    images, max_tokens = _scene_images(), [90, 16, 4, 12]
    expected = _one_at_a_time(demo, images, max_tokens)
    pixels = processor.preprocess_images([decode_image(data) for data in images])
    features = model.encode_images(pixels)
    rows = [
        Sequence(
            processor.tokenize([{"from": "human", "value": f"{IMAGE_TOKEN}\n{q}"}], TEMPLATE,
                               add_generation_prompt=True)["input_ids"],
            {name: f[i : i + 1] for name, f in features.items()}, max_new_tokens=n,
            stop_ids=frozenset({processor.tokenizer.eos_token_id}),
        )
        for i, (q, n) in enumerate(zip(QUESTIONS, max_tokens, strict=True))
    ]  # fmt: skip
    batch = Batch(model)
    with torch.inference_mode():
        batch.join(rows[:1])
        for _ in range(60):
            batch.step()
        batch.join(rows[1:3])
        for _ in range(6):
            batch.step()
        assert rows[2].done and len(batch.rows) == 2  # the short one has left, the others go on
        batch.join(rows[3:])
        while batch.rows:
            batch.step()
    answers = [processor.tokenizer.decode(r.tokens, skip_special_tokens=True).strip() for r in rows]
    assert answers == expected


def test_stop_strings_end_the_answer_before_them(keyed_server, demo):
    """OpenAI's `stop`, per request: the answer is the greedy one up to the first stop string, plain and
    streamed (where text that may start a stop string is held back), with finish_reason "stop"."""
    import openai

    url = keyed_server[0]
    full = _one_at_a_time(demo, _scene_images(), [24] * len(QUESTIONS))[0]
    stop = full.split()[2][:3]  # three characters of the third word: some text comes before it
    expected = full[: full.index(stop)].strip()
    assert expected and expected != full
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
    settings = {"model": "demo", "messages": _messages(_data_url(_scene_images()[0]), QUESTIONS[0]),
                "temperature": 0, "max_tokens": 24, "stop": ["never in this answer", stop]}  # fmt: skip
    whole = client.chat.completions.create(**settings)
    assert whole.choices[0].message.content == expected and whole.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(**settings, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def _one_padded_generate(model, processor, samples, pictures, decoding, seeds) -> list[str]:
    """`sgeo eval`'s generation before the batcher: one left-padded `model.generate` over the whole batch,
    sampling through `SeededSampler`."""
    from transformers import LogitsProcessorList

    from sgeo.model.sampling import SeededSampler

    batch = processor.pad(samples, padding_side="left")
    images = [image for item in pictures for image in item]
    sampler = {}
    if decoding.sample:
        sampler = {"logits_processor": LogitsProcessorList(
            [SeededSampler(decoding.temperature, decoding.top_k, seeds, model.device)])}  # fmt: skip
    rows = model.generate(
        batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=processor.preprocess_images(images),
        max_new_tokens=decoding.max_new_tokens, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
        **sampler,
    ).tolist()  # fmt: skip
    eos = processor.tokenizer.eos_token_id
    return [processor.tokenizer.decode(r[: r.index(eos)] if eos in r else r, skip_special_tokens=True).strip()
            for r in rows]  # fmt: skip


def test_eval_generation_on_the_batch_gives_evals_answers(demo):
    """`generate_answers` (what `sgeo eval` can call) against eval's generation before it (one left-padded
    `model.generate`): the same answers, greedy and seeded-sampled, for items of one, two and no images,
    two at a time (rows joining as others finish)."""
    from sgeo.benchmarks.protocols import Decoding
    from sgeo.inference.image_chat import TEMPLATE
    from sgeo.model.conversation import IMAGE_TOKEN
    from sgeo.model.generation import generate_answers
    from sgeo.pipeline.images import decode_image

    model, processor = demo
    scenes = [decode_image(data) for data in _scene_images()]
    items = [(QUESTIONS[0], scenes[:1]), (QUESTIONS[1], scenes[1:3]), (QUESTIONS[2], []), (QUESTIONS[3], scenes[3:])]  # fmt: skip
    samples = [
        processor.tokenize([{"from": "human", "value": f"{IMAGE_TOKEN}\n" * len(images) + question}], TEMPLATE,
                           add_generation_prompt=True)
        for question, images in items
    ]  # fmt: skip
    pictures, seeds = [images for _, images in items], [11, 22, 33, 44]
    for decoding in (Decoding(max_new_tokens=14), Decoding(sample=True, temperature=0.7, top_k=40, max_new_tokens=14)):  # fmt: skip
        expected = _one_padded_generate(model, processor, samples, pictures, decoding, seeds)
        answers = generate_answers(
            model, processor, samples, pictures, decoding.max_new_tokens, seeds=seeds, max_batch=2,
            temperature=decoding.temperature if decoding.sample else 0.0, top_k=decoding.top_k,
        )  # fmt: skip
        assert answers == expected, decoding
        assert len(set(expected)) > 1


def test_a_generation_config_repetition_penalty_is_applied_as_generate_applies_it(demo):
    """A chat LLM's generation_config.json may ask for a repetition penalty (Qwen2.5's 1.05); `generate`
    applies it to the answer's tokens, greedy or not. The batch does the same: engine replies and
    `generate_answers` equal `ImageChat`'s answers with the penalty on (which differ from those without)."""
    from concurrent.futures import ThreadPoolExecutor

    from sgeo.inference.image_chat import TEMPLATE
    from sgeo.model.conversation import IMAGE_TOKEN
    from sgeo.model.generation import generate_answers
    from sgeo.pipeline.images import decode_image

    model, processor = demo
    images, max_tokens = _scene_images(), [24, 20, 16, 24]
    plain = _one_at_a_time(demo, images, max_tokens)
    config = model.language_model.generation_config
    saved = config.repetition_penalty
    config.repetition_penalty = 1.5  # strong, so that it changes these short answers
    engine = None
    try:
        expected = _one_at_a_time(demo, images, max_tokens)
        assert expected != plain
        engine = Engine(model, processor, "demo", max_batch=4, max_queue=0)
        chats = [engine.open_chat(decode_image(data)) for data in images]
        replies = [engine.reply(c, q, 0.0, n) for c, q, n in zip(chats, QUESTIONS, max_tokens, strict=True)]
        with ThreadPoolExecutor(len(replies)) as pool:
            list(pool.map(list, replies))
        assert [r.answer for r in replies] == expected

        scenes = [[decode_image(data)] for data in images]
        samples = [
            processor.tokenize([{"from": "human", "value": f"{IMAGE_TOKEN}\n{q}"}], TEMPLATE,
                               add_generation_prompt=True)
            for q in QUESTIONS
        ]  # fmt: skip
        # `sgeo eval`'s generation too gives the one-at-a-time answers. (A left-padded `generate` does not:
        # from embeddings, transformers exempts a padded row's first generated tokens, as many as its
        # padding, from the penalty.)
        one_at_a_time = _one_at_a_time(demo, images, [12] * len(images))
        assert generate_answers(model, processor, samples, scenes, 12, max_batch=2) == one_at_a_time
    finally:
        config.repetition_penalty = saved
        if engine is not None:
            engine.close()


def test_a_system_message_replaces_the_templates_system_prompt(keyed_server, demo):
    """OpenAI's system message (what `sgeo eval --model openai:...` sends for a protocol with a system
    prompt): the answer is `ImageChat`'s with that system prompt in place of the template's own."""
    import openai

    from sgeo.inference.image_chat import ImageChat
    from sgeo.pipeline.images import decode_image

    url = keyed_server[0]
    model, processor = demo
    image, system = _scene_images()[0], "You are a careful judge of distances. Answer in metres."
    expected = ImageChat(model, processor, decode_image(image), system=system).ask(QUESTIONS[0], 0.0, 16)[
        "answer"
    ]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
    settings = {"model": "demo", "temperature": 0, "max_tokens": 16}
    plain = client.chat.completions.create(messages=_messages(_data_url(image), QUESTIONS[0]), **settings)
    messages = [{"role": "system", "content": system}, *_messages(_data_url(image), QUESTIONS[0])]
    answer = client.chat.completions.create(messages=messages, **settings)
    assert answer.choices[0].message.content == expected
    assert answer.usage.prompt_tokens != plain.usage.prompt_tokens  # the template's own prompt is replaced
