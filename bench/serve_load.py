"""`sgeo serve` under load: 1, 8 and 32 concurrent clients, as evaluation harnesses and chat apps send.

For each model (default: tiny, then demo) it starts `sgeo serve --model M` on loopback, warms it up, then per
level runs N client threads, each sending non-streamed `/v1/chat/completions` requests one after another
(greedy, `max_tokens` 16, a different image in every request unless `--images K` cycles K of them, as a
benchmark asking several questions per image does), and prints tokens/s, requests/s and p50 / p95 latency.
The 1-client level is the one-at-a-time figure; each level's speed-up is over it, measured in the same run.
Then the 32-client level again against the same server started with `--max-batch 1` (every answer alone:
what a harness's 10 s timeout meets without batching), and with `--baseline-src DIR`, 1 and 32 clients
against the server of another checkout (`git archive HEAD src | tar -x -C /tmp/before`: DIR=/tmp/before/src).

    python bench/serve_load.py [--models tiny,demo] [--levels 1,8,32] [--max-tokens 16] [--images 0]

Each level sends `max(--requests, 4 x clients)` requests and stops starting new ones after `--seconds`;
the server listens on 127.0.0.1 only. Refused requests (429) are counted, not retried.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

QUESTION = "How far is the red box from the blue sphere?"


def _jpeg(seed: int, width: int = 336, height: int = 252) -> bytes:
    """A photo-sized JPEG: a smooth random gradient with a few boxes (~10-20 KB, like a compressed photo)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    base, dx, dy = (rng.uniform(0, 255, (3, 1, 1, 3))).astype(np.float32)
    rgb = np.clip(base + (dx - 128) * x + (dy - 128) * y, 0, 255)
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 40)
        rgb[y0 : y0 + rng.integers(10, 40), x0 : x0 + rng.integers(10, 40)] = rng.uniform(0, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _body(image: bytes, max_tokens: int) -> bytes:
    url = f"data:image/jpeg;base64,{base64.b64encode(image).decode()}"
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
    request = {"model": "bench", "messages": [{"role": "user", "content": content}], "temperature": 0,
               "max_tokens": max_tokens}  # fmt: skip
    return json.dumps(request).encode()


class Server:
    """`sgeo serve` in a subprocess on 127.0.0.1 and a free port (from the `src` folder `source` if given)."""

    def __init__(self, model: str, extra: list[str], work: Path, source: Path | None = None):
        self.log = work / f"serve-{model}-{os.getpid()}-{time.monotonic_ns()}.txt"
        env = dict(os.environ)
        if source is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [env.get("PYTHONPATH")])])
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sgeo.cli", "serve", "--model", model, "--host", "127.0.0.1", "--port", "0",
                 *extra], stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + 300
        while "sgeo serve: http://" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"sgeo serve did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        url = self.log.read_text().split("sgeo serve: ")[1].split()[0]
        self.host, self.port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_level(server: Server, clients: int, bodies: list[bytes], seconds: float) -> dict:
    """`clients` threads share `bodies` (each sent once, in order) until they run out or `seconds` pass."""
    lock, next_body = threading.Lock(), iter(range(len(bodies)))
    latencies: list[float] = []
    tokens, refused, failed = [0], [0], [0]
    stop_at = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(server.host, int(server.port), timeout=300)
        while time.monotonic() < stop_at:
            with lock:
                i = next(next_body, None)
            if i is None:
                return
            start = time.monotonic()
            connection.request(
                "POST", "/v1/chat/completions", bodies[i], {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            data = response.read()
            took = time.monotonic() - start
            with lock:
                if response.status == 200:
                    latencies.append(took)
                    tokens[0] += json.loads(data)["usage"]["completion_tokens"]
                elif response.status == 429:
                    refused[0] += 1
                else:
                    failed[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    latencies.sort()

    def percentile(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, math.ceil(q * len(latencies)) - 1)] if latencies else math.nan
        )

    return {"clients": clients, "answered": len(latencies), "refused": refused[0], "failed": failed[0],
            "tokens_per_s": tokens[0] / wall, "requests_per_s": len(latencies) / wall,
            "p50": percentile(0.50), "p95": percentile(0.95), "tokens_per_answer": tokens[0] / max(1, len(latencies))}  # fmt: skip


def _row(label: str, result: dict, baseline: float) -> str:
    return (
        f"{label:<26} {result['answered']:>5} {result['refused']:>5} {result['tokens_per_answer']:>6.1f} "
        f"{result['tokens_per_s']:>9.1f} {result['tokens_per_s'] / baseline:>6.2f}x {result['requests_per_s']:>7.2f} "
        f"{result['p50']:>7.3f} {result['p95']:>7.3f}"
    )


def bench_model(model: str, args, work: Path) -> None:
    counts = [max(args.requests, 4 * level) for level in args.levels]
    unbatched_count = max(args.requests, 4 * max(args.levels))
    distinct = args.images or sum(counts) + unbatched_count  # with every image new, no request sees another's
    images = [_jpeg(1000 + i) for i in range(distinct)]
    firsts = [sum(counts[:k]) for k in range(len(counts))] + [sum(counts)]  # each level's first image
    results = []
    header = f"{'':<26} {'done':>5} {'429':>5} {'tok/a':>6} {'tokens/s':>9} {'speed':>7} {'req/s':>7} {'p50 s':>7} {'p95 s':>7}"
    server = Server(model, ["--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)], work)
    try:
        warm = [_body(_jpeg(9000 + i), args.max_tokens) for i in range(8)]
        run_level(server, 1, warm[:4], 120)  # first calls pay lazy initialisation
        run_level(server, 4, warm[4:], 120)
        for k, (level, count) in enumerate(zip(args.levels, counts, strict=True)):
            bodies = [_body(images[(firsts[k] + i) % distinct], args.max_tokens) for i in range(count)]
            results.append(
                (f"{level} client{'s' if level > 1 else ''}", run_level(server, level, bodies, args.seconds))
            )
    finally:
        server.stop()
    unbatched = None
    if args.unbatched:
        server = Server(model, ["--max-batch", "1", "--max-queue", str(args.max_queue)], work)
        try:
            run_level(server, 1, [_body(_jpeg(9000 + i), args.max_tokens) for i in range(4)], 120)
            level = max(args.levels)
            bodies = [
                _body(images[(firsts[-1] + i) % distinct], args.max_tokens) for i in range(unbatched_count)
            ]
            unbatched = (f"{level} clients, --max-batch 1", run_level(server, level, bodies, args.seconds))
        finally:
            server.stop()
    before = []
    if args.baseline_src:
        server = Server(model, [], work, args.baseline_src)
        try:
            run_level(server, 1, [_body(_jpeg(9000 + i), args.max_tokens) for i in range(4)], 120)
            for level in (1, max(args.levels)):
                bodies = [
                    _body(images[(firsts[-1] + i) % distinct], args.max_tokens)
                    for i in range(unbatched_count)
                ]
                label = f"{level} client{'s' if level > 1 else ''}, {args.baseline_src}"
                before.append((label[:26], run_level(server, level, bodies, args.seconds)))
        finally:
            server.stop()
    baseline = results[0][1]["tokens_per_s"]
    what = f"{args.images} images cycled" if args.images else "a different image in every request"
    print(f"\n== --model {model}: {args.max_tokens}-token greedy answers, {what}, server --max-batch {args.max_batch} "
          f"--max-queue {args.max_queue} ==")  # fmt: skip
    print(header)
    for label, result in results + ([unbatched] if unbatched else []) + before:
        print(_row(label, result, baseline))
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,demo")
    parser.add_argument("--levels", default="1,8,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64, help="requests per level (at least 4 per client)")
    parser.add_argument("--seconds", type=float, default=60, help="no new request after this long in a level")
    parser.add_argument(
        "--images", type=int, default=0, help="cycle this many images (0: a new one each time)"
    )
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--no-unbatched", dest="unbatched", action="store_false",
                        help="skip the --max-batch 1 run")  # fmt: skip
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="also 1 and 32 clients against the server of this `src` folder (another checkout)")  # fmt: skip
    args = parser.parse_args()
    if args.levels[0] != 1:
        parser.error("--levels must start with 1: the one-at-a-time figure the others are compared with")
    with tempfile.TemporaryDirectory(prefix="sgeo-serve-load-") as work:
        for model in args.models.split(","):
            bench_model(model, args, Path(work))


if __name__ == "__main__":
    main()
