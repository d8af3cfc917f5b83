"""What one request may cost `sgeo serve` in memory: the server's peak RSS growth for hostile and large images.

Starts `sgeo serve --model tiny` on loopback, sends one small image to warm it up, then, one case at a time,
samples the server's RSS every 20 ms while the request runs and prints the peak growth over the warmed-up RSS:

- the 16-bit PNG of issue 25 (9459x9459 zeros: ~200 KB on disk, 179 MB as PIL's buffer, 2.3 GB before the budget);
- two of them at once;
- a 48-megapixel JPEG (8000x6000, a smooth gradient, ~1 MB), which the budget decodes at a reduced scale.

    python bench/serve_memory.py [--max-image-mb 128]

To measure another checkout (say the commit before the budget), put its `src` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
from PIL import Image


def _data_url(data: bytes, kind: str) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _png16(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), dtype=np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(width: int, height: int) -> bytes:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.broadcast_to((x + y) / 2, (height, width, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _post(url: str, image_url: str) -> int:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "How far?"},
            {"type": "image_url", "image_url": {"url": image_url}}]}], "max_tokens": 4, "temperature": 0}  # fmt: skip
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _peak_during(process: psutil.Process, requests: list) -> tuple[int, list[int]]:
    """(peak RSS while `requests` run concurrently, their statuses)."""
    peak, done, statuses = process.memory_info().rss, threading.Event(), []

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=lambda r=r: statuses.append(r())) for r in requests]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    sampler.join()
    return peak, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--max-image-mb", type=float, default=None, help="passed to sgeo serve (default: its own)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sgeo-serve-memory-"))
    command = [
        sys.executable,
        "-m",
        "sgeo.cli",
        "serve",
        "--model",
        "tiny",
        "--port",
        "0",
        "--max-request-mb",
        "8",
    ]
    if args.max_image_mb is not None:
        command += ["--max-image-mb", str(args.max_image_mb)]
    log = work / "stdout.txt"
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        while "sgeo serve: http://" not in log.read_text():
            if server.poll() is not None:
                sys.exit(f"sgeo serve exited {server.returncode}")
            time.sleep(0.2)
        url = log.read_text().split("sgeo serve: ")[1].split()[0].rstrip("/")
        process = psutil.Process(server.pid)
        small = _data_url(_jpeg(640, 480), "jpeg")
        _post(url, small)  # warm: model, tokenizer and the first image's buffers
        png16, jpeg48 = _data_url(_png16(9459), "png"), _data_url(_jpeg(8000, 6000), "jpeg")
        png16_ok = _data_url(_png16(7900), "png")  # 119 MB as PIL's buffer: inside the default budget
        cases = {  # the accepted images first: RSS that a case grows is not given back to the next
            "JPEG 8000x6000, 48 MP (one request)": (jpeg48, 1),
            "16-bit PNG 7900x7900 (one request)": (png16_ok, 1),
            "16-bit PNG 9459x9459 (one request)": (png16, 1),
            "16-bit PNG 9459x9459 (two at once)": (png16, 2),
        }
        print(f"{'case':<40} {'sent':>9} {'status':>8} {'peak RSS growth':>16}")
        for name, (image_url, concurrent) in cases.items():
            base = process.memory_info().rss
            peak, statuses = _peak_during(process, [lambda u=image_url: _post(url, u)] * concurrent)
            sent = len(image_url) / 2**10
            print(
                f"{name:<40} {sent:>7.0f} KB {','.join(map(str, statuses)):>8} {(peak - base) / 2**20:>13.0f} MB"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
