"""`sgeo ask` on the tiny preset: one-shot, --json, the interactive loop, bad inputs, and KV-cache greedy parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_sgeo
from sgeo.benchmarks import Decoding
from sgeo.errors import SgeoError
from sgeo.inference.image_chat import ImageChat
from sgeo.jobs.ask import AskConfig, run_ask
from sgeo.jobs.eval import generate_batch

QUESTION = "How far is the red box from the blue sphere?"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A real PNG on disk (not square, so the processor pads it)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("ask") / "scene.png"
    Image.fromarray(rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)).save(path)
    return path


def test_ask_streams_an_answer(photo):
    result = run_sgeo("ask", photo, QUESTION, "--model", "tiny", "--max-new-tokens", "12", check=True)
    assert result.returncode == 0
    assert result.stdout.strip()


def test_ask_json(photo):
    result = run_sgeo(
        "ask", photo, QUESTION, "--json", "--temperature", "0", "--max-new-tokens", "8", check=True
    )
    answer = json.loads(result.stdout)  # only the JSON object on stdout: nothing was streamed
    assert set(answer) >= {"answer", "model", "tokens", "seconds"}
    assert answer["model"] == "tiny" and answer["answer"]
    assert 1 <= answer["tokens"] <= 8 and answer["seconds"] > 0


def test_interactive_loop_answers_two_questions(photo):
    result = run_sgeo(
        "ask", photo, "--max-new-tokens", "6", "--temperature", "0", input="Q one?\nQ two?\n", check=True
    )
    assert result.stdout.count("USER: ") == 3  # two questions, then the prompt that reads end of input
    answers = result.stdout.split("ASSISTANT: ")[1:]
    assert len(answers) == 2 and all(a.split("USER:")[0].strip() for a in answers)


@pytest.mark.parametrize("case", ["missing", "not_an_image"])
def test_bad_image_is_one_line_exit_2(tmp_path, case):
    path = tmp_path / "picture.png"
    if case == "not_an_image":
        path.write_text("this is text, not a PNG\n")
    result = run_sgeo("ask", path, QUESTION)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and str(path) in result.stderr


def test_missing_model_and_quantizing_on_cpu_are_user_errors(photo, tmp_path):
    # In-process (the CLI's one-line rendering of SgeoError is covered above).
    with pytest.raises(SgeoError, match="neither a preset"):
        run_ask(AskConfig(photo, QUESTION, model=str(tmp_path / "no-such-model")))
    with pytest.raises(SgeoError, match="needs a CUDA GPU"):
        run_ask(AskConfig(photo, QUESTION, load_4bit=True, device="cpu"))


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` (valid chunks and CRCs), with no pixel data: what a
    decompression bomb shows before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_a_huge_image_is_refused_with_advice_the_user_can_follow(tmp_path):
    """Over the pixel limit: the error says what to do with the image, not to raise a limit no command
    takes (there is no max_pixels option)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(10_000, 10_000))  # over sgeo's 89.5M pixels, under PIL's own 179M
    with pytest.raises(SgeoError, match="over the limit") as error:
        run_ask(AskConfig(path, QUESTION))
    assert "max_pixels" not in str(error.value) and "downscale it" in str(error.value)


def _scene() -> Image.Image:
    image = Image.new("RGB", (112, 84), (150, 150, 150))
    image.paste((205, 45, 40), (10, 40, 40, 70))
    image.paste((45, 85, 210), (70, 30, 100, 60))
    return image


def test_greedy_is_the_same_with_and_without_kv_cache(tiny):
    model, processor = tiny
    image = _scene()
    # Cached features (the ask path): the second turn runs on the conversation so far.
    chat = ImageChat(model, processor, image)
    chat.ask(QUESTION, temperature=0, max_new_tokens=16)
    tokens = processor.tokenize(
        [*chat.turns, {"from": "human", "value": "And the green one?"}], "vicuna_v1", True
    )
    input_ids = torch.tensor([tokens["input_ids"]])
    features = {"image_features": chat.image_features}
    kwargs = {"max_new_tokens": 24, "do_sample": False, "min_new_tokens": 24}
    cached = model.generate(input_ids, **features, **kwargs)
    uncached = model.generate(input_ids, **features, use_cache=False, **kwargs)
    assert cached.shape[1] == 24 and torch.equal(cached, uncached)
    # Pixels (the eval path), left-padded in a batch whose prompts differ in length.
    prompts = [QUESTION, "Is the red box to the left of the blue box? Answer yes or no, then explain."]
    samples = [
        processor.tokenize([{"from": "human", "value": f"<image>\n{p}"}], "vicuna_v1", True) for p in prompts
    ]
    batch = processor.pad(samples, padding_side="left")
    pixels = processor.preprocess_images([image, image])
    args = (batch["input_ids"], batch["attention_mask"])
    cached = model.generate(*args, pixel_values=pixels, **kwargs)
    uncached = model.generate(*args, pixel_values=pixels, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    # Padding changes nothing: each row is what the prompt alone generates.
    greedy = Decoding(max_new_tokens=24)
    alone = [generate_batch(model, processor, [s], [[image]], greedy, [0])[0] for s in samples]
    assert generate_batch(model, processor, samples, [[image], [image]], greedy, [0, 0]) == alone
