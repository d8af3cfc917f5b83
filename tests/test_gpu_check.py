"""`bench/gpu_check.py --device cpu --preset tiny`: the GPU check's every section runs on CPU at tiny size, so
the script cannot rot between the rare runs on a GPU. Its figures are not checked, its checks are."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_gpu_check_runs_on_cpu_at_tiny_size(tmp_path):
    out = tmp_path / "gpu_check.json"
    small = ["--encode-batch", "4", "--stage1-batch", "2", "--stage2-batch", "2", "--steps", "1", "--warmup", "0",
             "--repeats", "1", "--gen-batch", "3", "--new-tokens", "6", "--compare-tokens", "4"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--preset", "tiny", *small,
         "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["checks"] == {"loss_equal": True, "kv_cache_tokens": True, "no_ray": True}
    assert [(row["stage"], row["attn"]) for row in report["train"]] == [(1, "sdpa"), (2, "sdpa")]
    for row in report["train"]:
        for mode in ("cached", "online"):
            assert row[mode]["samples_per_s"] > 0 and all(
                x == x for x in row[mode]["losses"]
            )  # finite, not NaN
    assert report["generate"]["tokens_compared"] == 3 * 4 and report["encode"]["batch"] == 4
    # the yardstick and the MFU figures (issue 31): a measured matmul rate, the towers' FLOPs, each stage with
    # checkpointing off too (the largest batch is predicted from GPU memory only: None on CPU)
    assert (
        report["matmul"]["tflops"] > 0
        and report["encode"]["mfu"] > 0
        and report["encode"]["tflop_per_image"] > 0
    )
    for row in report["train"]:
        assert row["cached"]["mfu"] > 0 and row["no_checkpointing"]["mfu"] > 0
        assert row["largest_batch_checkpointing"] is None and row["largest_batch_no_checkpointing"] is None
    assert report["extract"] == {"skipped": "--extract-images 0"}  # Ray's run is opt-in on CPU
    assert report["4bit"] == {"skipped": "needs CUDA and bitsandbytes"}
    for line in (
        "encode, bf16 autocast",
        "stage 1 sdpa",
        "stage 2 sdpa",
        "loss, same batch",
        "KV cache vs none",
        "matmul, bf16",
        "no checkpointing, batch",
    ):
        assert line in result.stdout
