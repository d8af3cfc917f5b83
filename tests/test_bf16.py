"""bf16 on CPU, as the GPU recipe runs it: `--precision` of train and extract (defaults unchanged: bf16 on GPU,
fp32 on CPU), an extraction under bf16 autocast through the CLI, and stage 2 with bf16 weights in DeepSpeed's
bf16 mode on the CPU accelerator, from that store and from pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import open_extracted, run_sgeo

SHARD, BATCH, LIMIT = 8, 2, 8  # one shard: one encoder actor to start


# -- the switch ------------------------------------------------------------------------------------
def test_precision_defaults_and_deepspeed_bf16(tmp_path):
    from sgeo.errors import SgeoError
    from sgeo.jobs.extract import autocast_dtype
    from sgeo.jobs.train.deepspeed_config import deepspeed_config
    from sgeo.jobs.train.recipe import TrainConfig, check_config, training_settings
    from sgeo.model import load_config

    data = tmp_path / "d.json"
    data.write_text("[]")

    def settings(device, **options):
        config = TrainConfig(
            stage=2, data=data, out=tmp_path, store="s", batch_size=1, grad_accum=1, **options
        )
        return training_settings(config, 1, device)

    assert settings("cpu").precision == "fp32" and settings("cuda").precision == "bf16"
    assert settings("cpu", precision="bf16").precision == "bf16"
    config = load_config("tiny")
    assert deepspeed_config(settings("cpu"), config)["bf16"]["enabled"] is False
    on_cpu = deepspeed_config(settings("cpu", precision="bf16"), config)
    assert on_cpu["bf16"]["enabled"] is True and on_cpu["optimizer"]["params"]["torch_adam"] is True
    assert deepspeed_config(settings("cuda"), config)["bf16"]["enabled"] is True
    disagreeing = tmp_path / "ds.json"
    disagreeing.write_text(json.dumps({"bf16": {"enabled": False}, "zero_optimization": {"stage": 2}}))
    with pytest.raises(SgeoError, match="bf16.enabled"):
        deepspeed_config(settings("cpu", precision="bf16", deepspeed=disagreeing), config)
    with pytest.raises(SgeoError, match="--precision"):
        check_config(TrainConfig(stage=2, data=data, out=tmp_path, store="s", precision="fp8"))
    # extraction: the store dtype under autocast on GPU, fp32 on CPU, unless --precision says
    assert autocast_dtype(None, True, "cuda", "bf16") is torch.bfloat16
    assert autocast_dtype(None, True, "cuda", "fp16") is torch.float16
    assert autocast_dtype(None, False, "cuda", "bf16") is None
    assert autocast_dtype(None, True, "cpu", "bf16") is None
    assert autocast_dtype("bf16", True, "cpu", "fp16") is torch.bfloat16
    assert autocast_dtype("fp32", True, "cuda", "bf16") is None


def test_inference_precision_on_cpu():
    from sgeo.errors import SgeoError
    from sgeo.inference.loading import pick_device

    assert pick_device("cpu") == ("cpu", torch.float32)
    assert pick_device("cpu", "bf16") == ("cpu", torch.bfloat16)
    with pytest.raises(SgeoError, match="fp16 needs a GPU"):
        pick_device("cpu", "fp16")


# -- an extraction under bf16 autocast -------------------------------------------------------------
@pytest.fixture(scope="module")
def bf16_store(synthetic_root, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("bf16") / "feats.zarr"
    args = ["extract", "--dataset", "synthetic", "--root", synthetic_root, "--store", store, "--precision", "bf16",
            "--shard-size", SHARD, "--batch-size", BATCH, "--num-cpus", 2, "--limit", LIMIT]  # fmt: skip
    result = run_sgeo(*args, check=True)
    assert f"{LIMIT} ok, 0 failed" in result.stdout, result.stdout
    return store


def test_extraction_autocasts_to_bf16_on_cpu(bf16_store, synthetic_root, tiny):
    """The store holds `encode_shard` under bf16 autocast, bit for bit (at the actors' thread count): not the
    fp32 encoding rounded to bf16, but within bf16's precision of it."""
    from sgeo.jobs.extract import encode_shard, plan_resources
    from sgeo.pipeline.images import load_image

    model, processor = tiny
    extracted = open_extracted(bf16_store)
    store = extracted.anchor  # the clip store: its shards are every store's
    rows = extracted.manifest().to_pylist()
    threads = torch.get_num_threads()
    torch.set_num_threads(plan_resources(2, 0).torch_threads)
    try:
        for k in range(store.num_shards):
            shard = list(store.shard_rows(k))
            pixels = processor.preprocess_images(
                [load_image(synthetic_root / rows[r]["image_id"])[0] for r in shard]
            )
            ok = np.ones(len(shard), bool)
            want = encode_shard(model.towers, pixels, ok, BATCH, "bf16", torch.bfloat16)
            fp32 = encode_shard(model.towers, pixels, ok, BATCH, "bf16", None)
            got = extracted.read(shard)
            for name, have, autocast, plain in zip(("clip", "moge"), got.values(), want.values(), fp32.values(),
                                                   strict=True):  # fmt: skip
                assert np.array_equal(have, autocast), f"{name} of shard {k}"
                assert not np.array_equal(have, plain), f"{name} of shard {k} was not autocast"
                as_float = [
                    torch.from_numpy(a.astype(np.int32) << 16).view(torch.float32) for a in (have, plain)
                ]
                torch.testing.assert_close(*as_float, rtol=0.1, atol=0.1)
    finally:
        torch.set_num_threads(threads)


def test_extract_precision_is_checked_before_ray(synthetic_root, tmp_path):
    from sgeo.errors import SgeoError
    from sgeo.jobs.extract import ExtractConfig, run_extract

    with pytest.raises(SgeoError, match="--precision"):
        run_extract(ExtractConfig(root=synthetic_root, store=str(tmp_path / "s.zarr"), precision="fp64"))
    with pytest.raises(SgeoError, match="--no-autocast"):
        run_extract(ExtractConfig(root=synthetic_root, store=str(tmp_path / "s.zarr"), precision="bf16",
                                  autocast=False))  # fmt: skip
    assert not (tmp_path / "s.zarr").exists()


# -- stage 2 in bf16 on the CPU accelerator --------------------------------------------------------
def test_stage2_in_bf16_from_the_store_and_from_pixels(bf16_store, synthetic_root, in_process, tmp_path):
    """Two steps of stage 2 with bf16 weights in DeepSpeed's bf16 mode: finite losses, bf16 weights out; the
    first step's loss from the bf16 store and from pixels (towers in bf16 in the step) agree to bf16."""
    from safetensors import safe_open

    from sgeo.jobs.train import TrainConfig, run_train

    def options(out, **kw):
        return TrainConfig(stage=2, data=synthetic_root / "spatial_qa.json", store=str(bf16_store), out=tmp_path / out,
                           model="tiny", batch_size=2, grad_accum=1, num_workers=0, lora_r=8, lora_alpha=16, seed=5,
                           precision="bf16", save_every=100, **kw)  # fmt: skip

    cached = run_train(options("cached", max_steps=2))
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "cached" / "metrics.jsonl").read_text().splitlines()
    ]
    assert cached["steps"] == 2 and len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
    assert json.loads((tmp_path / "cached" / "train_config.json").read_text())["precision"] == "bf16"
    with safe_open(tmp_path / "cached" / "model.safetensors", "pt") as weights:
        names = weights.keys()
        assert {str(weights.get_slice(n).get_dtype()) for n in names} == {"BF16"}
    online = run_train(options("online", max_steps=1, online=True, image_root=synthetic_root))["loss"]
    assert math.isfinite(online) and abs(online - losses[0]) <= 1e-3 * abs(losses[0]), (online, losses[0])
