"""`sgeo extract --compile` and `--batch-size auto` (issue 31): compiled towers run one batch shape (a shard's
tail batch padded, the padding dropped) and give the eager features within tolerance; the auto batch never
exceeds what the measured free memory holds; the summary says where the workers' time went.

torch.compile's default backend (inductor) needs about a minute of C++ compilation for the tiny towers on
2 cores, so the tests compile with `aot_eager` (the same Dynamo capture and graph, ATen kernels instead of
generated code): what is tested is sgeo's side (one shape, padding, features kept), not inductor's codegen.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cli_batch import run
from conftest import assert_one_line_error, open_extracted

BACKEND = "aot_eager"


def counting_backend(calls: list):
    """A torch.compile backend that counts the graphs Dynamo hands it (one per shape it compiles for)."""
    from torch._dynamo.backends.registry import lookup_backend

    def backend(gm, example_inputs):
        calls.append(1)
        return lookup_backend(BACKEND)(gm, example_inputs)

    return backend


def test_compiled_towers_compile_once_and_equal_eager(tiny_dir):
    """Batch 2 over 5 images: the tail batch (1 image) is padded to 2, so nothing compiles after the first
    batch; features equal eager's within fp32 tolerance, and a batch without an ok image stays zero."""
    from sgeo.jobs.extract.shard_worker import compile_towers, encode_shard
    from sgeo.model import load_encoders

    torch._dynamo.reset()
    eager, compiled = load_encoders("tiny"), load_encoders("tiny")  # compiled in place: never the session's
    calls: list = []
    compile_towers(compiled, counting_backend(calls))
    size = eager.towers["clip"].spec.image_size
    pixels = torch.randn(7, 3, size, size, generator=torch.Generator().manual_seed(0))
    encode_shard(compiled, pixels[:2], np.ones(2, bool), 2, "fp32", pad=True)
    after_first_batch = len(calls)
    assert after_first_batch > 0  # it did compile
    ok = np.array([True, True, True, True, False, False, True])  # batches [0,1] [2,3] [4,5] (none ok) [6]+pad
    got = encode_shard(compiled, pixels, ok, 2, "fp32", pad=True)
    assert len(calls) == after_first_batch  # the tail batch ran the graph already compiled
    want = encode_shard(eager, pixels, ok, 2, "fp32")
    for name in ("clip", "moge"):
        assert got[name].shape == want[name].shape == (7, *eager.towers[name].spec.feature_shape)
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
        assert not got[name][4:6].any()  # the batch with no ok image is not encoded
        assert got[name][6].any()  # the padded tail's real row is kept

    # without padding the tail's new shape compiles again: what --compile's padding avoids
    encode_shard(compiled, pixels[:3], np.ones(3, bool), 2, "fp32", pad=False)
    assert len(calls) > after_first_batch


def test_extract_compile_through_ray_equals_eager(synthetic_root, tmp_path, tiny):
    """The real job (local Ray cluster, shard workers) with compiled towers: 5 images in one shard, batches of
    4 (the tail of 1 padded); the stores hold the eager features within bf16 rounding."""
    from sgeo.jobs.extract import ExtractConfig, run_extract
    from sgeo.pipeline.datasets import get_dataset
    from sgeo.pipeline.features import decode
    from sgeo.pipeline.images import load_image

    store = tmp_path / "feats"
    summary = run_extract(ExtractConfig(root=synthetic_root, store=str(store), batch_size=4, shard_size=5,
                                        limit=5, num_cpus=1, progress=False, compile=BACKEND))  # fmt: skip
    assert summary.ok == 5 and summary.busy.batch == 4
    model, processor = tiny
    ids = [ref.image_id for ref in get_dataset("synthetic", synthetic_root).images()][:5]
    with torch.inference_mode():
        want = model.encode_images(
            processor.preprocess_images([load_image(synthetic_root / i)[0] for i in ids])
        )
    opened = open_extracted(store)
    assert [r["status"] for r in opened.manifest().to_pylist()] == ["ok"] * 5
    got = opened.read(np.arange(5))
    for name in ("clip", "moge"):
        values = decode(got[name], opened.dtypes[name], torch.float32).numpy()
        # bf16 store: one rounding of each value (8 bits of mantissa) on top of the compiled/eager difference
        np.testing.assert_allclose(values, want[name].numpy(), rtol=2e-2, atol=2e-2, err_msg=name)


@pytest.mark.parametrize("image_bytes", [1, 3, 1000, 7 << 20, 123_456_789])
@pytest.mark.parametrize("free_bytes", [8 << 20, 10**9, 80 << 30, 139 << 30])
@pytest.mark.parametrize("cap", [None, 64, 48])
def test_auto_batch_size_never_exceeds_what_fits(free_bytes, image_bytes, cap):
    from sgeo.errors import SgeoError
    from sgeo.jobs.extract.shard_worker import AUTO_FILL, auto_batch_size

    budget = int(free_bytes * AUTO_FILL)
    if image_bytes > budget:
        with pytest.raises(SgeoError, match="per image but the GPU has"):
            auto_batch_size(free_bytes, image_bytes, cap)
        return
    batch = auto_batch_size(free_bytes, image_bytes, cap)
    assert batch >= 1 and batch * image_bytes <= budget <= free_bytes
    if cap is not None:
        assert batch <= cap
    if batch != cap:  # the largest power of two that fits: twice as many would not
        assert batch & (batch - 1) == 0 and 2 * batch * image_bytes > budget


def test_auto_batch_size_of_a_ref_dims_gpu():
    """An H100 with the two ref-dims towers loaded (~70 GiB free) and ~60 MiB per image in bf16: the
    shard (64) bounds the batch, not memory; a nearly full GPU gives a small power of two."""
    from sgeo.jobs.extract.shard_worker import auto_batch_size

    assert auto_batch_size(70 << 30, 60 << 20, cap=64) == 64
    assert auto_batch_size(70 << 30, 60 << 20) == 512
    assert auto_batch_size(1 << 30, 60 << 20, cap=64) == 8


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--batch-size", "auto"], ["--batch-size auto", "GPU memory", "--num-gpus"]),
        (["--batch-size", "many"], ["--batch-size must be a number or auto", "'many'"]),
        (["--batch-size", "0"], ["--batch-size must be at least 1"]),
    ],
)
def test_bad_batch_size_is_one_line(synthetic_root, tmp_path, extra, fragments):
    store = tmp_path / "feats"
    result = run(["extract", "--root", str(synthetic_root), "--store", str(store), "--limit", "2", *extra])
    assert_one_line_error(result, *fragments)
    assert not store.exists()  # refused before anything was written


def test_summary_says_where_the_workers_time_went():
    from sgeo.jobs.extract import ExtractSummary

    summary = ExtractSummary("s", 100, 100, 0, 0, 10, 0, 10.0, 1 << 20)
    summary.busy.add({"decode_s": 12.0, "wait_s": 1.0, "encode_s": 8.0, "write_s": 1.0, "batch_size": 32})
    line = summary.lines()[-1]
    assert line == (
        "batch 32: towers busy 80% of the workers' time, waiting for pixels 10%, writing 10%; "
        "decoding kept 1.20 threads busy per worker"
    )
    assert "10.00 images/s" in summary.lines()[0]


def test_local_cluster_runs_its_workers_at_normal_priority():
    """Ray starts workers at nice 15; extract's workers are the job, and at 15 any other process of a shared
    machine takes their cores first (issue 31: the CPU efficiency gap against a plain loop)."""
    import os

    import ray

    from sgeo.jobs.extract.ray_runtime import start_ray

    assert start_ray(None, 1, 0)
    try:
        assert ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote()) == os.nice(0)
    finally:
        ray.shutdown()
