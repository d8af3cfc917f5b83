"""`sgeo train` on the tiny preset with a real DeepSpeed engine on CPU and a small feature store.

Covers: the data join (failed / absent images skipped, text-only samples kept) and collation; the seeded
batch order; stage 1 then stage 2 through the CLI (loss goes down, exactly the trainable tensors change,
towers never built); cached == online loss; kill + resume == uninterrupted; two ranks under torchrun;
refusals (other fingerprint, missing JSON or store) as one-line errors with exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_sgeo

FAILED = "images/000003.png"  # recorded as failed in the test store
ABSENT = "images/999999.png"  # in the JSON, not in the store
STAGE1_ARGS = ["--batch-size", "4", "--grad-accum", "2", "--max-steps", "30", "--save-every", "5",
               "--lr", "1e-2", "--seed", "3"]  # fmt: skip
STAGE2_ARGS = ["--batch-size", "2", "--grad-accum", "2", "--max-steps", "12", "--lr", "3e-3", "--adapter-lr", "3e-3",
               "--lora-r", "8", "--lora-alpha", "16", "--seed", "3", "--group-by-length", "--clip-drop", "0.3",
               "--merge-lora"]  # fmt: skip


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory, synthetic_root, tiny):
    """The synthetic images in a bf16 store (one image failed), their fp32 features, and training JSONs.

    stage1.json: the captions. stage2.json: the spatial QA plus two text-only samples and one sample whose
    image is absent from the store.
    """
    from sgeo.model import resolve_model
    from sgeo.model.tower_fingerprint import towers_fingerprint
    from sgeo.pipeline.images import load_image
    from sgeo.pipeline.store_writer import write_store

    model, processor = tiny
    work = tmp_path_factory.mktemp("train")
    captions = json.loads((synthetic_root / "captions.json").read_text())
    qa = json.loads((synthetic_root / "spatial_qa.json").read_text())
    ids = sorted({s["image"] for s in captions + qa})
    pixels = processor.preprocess_images([load_image(synthetic_root / i)[0] for i in ids])
    clip, moge = model.encode_images(pixels).values()  # fp32: [N, T, Dc], [N, L, T, Dm]
    fingerprint = towers_fingerprint(resolve_model("tiny"), processor.preprocessing_spec(), "bf16")
    write_store(
        str(work / "store.zarr"), image_ids=ids, paths=[str(synthetic_root / i) for i in ids],
        fingerprint=fingerprint, features={"clip": clip, "moge": moge}, dtype="bf16", shard_size=8,
        failed={FAILED: "test"},
    )  # fmt: skip

    text_only = [
        {"id": f"t{i}", "conversations": [{"from": "human", "value": f"How many {w} are there?"},
                                          {"from": "gpt", "value": "There are two."}]}
        for i, w in enumerate(("boxes", "spheres"))
    ]  # fmt: skip
    absent = {**qa[0], "id": "absent", "image": ABSENT}
    (work / "stage1.json").write_text(json.dumps(captions))
    (work / "stage2.json").write_text(json.dumps(qa + text_only + [absent]))
    return {"work": work, "root": synthetic_root, "store": str(work / "store.zarr"), "ids": ids,
            "clip": clip.numpy(), "moge": moge.numpy(), "stage1": work / "stage1.json",
            "stage2": work / "stage2.json", "fingerprint": fingerprint}  # fmt: skip


def _state(directory: Path) -> dict[str, torch.Tensor]:
    from sgeo.model import load_model

    model, _ = load_model(str(directory), load_towers=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _differing(a: dict, b: dict) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train_cli(data, out: Path, stage: int, *args: str, **kwargs):
    return run_sgeo("train", "--stage", stage, "--data", data[f"stage{stage}"], "--store", data["store"],
                    "--out", out, *args, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def stage1(data):
    """Stage 1 through the CLI from the tiny preset (also the uninterrupted reference of the resume test)."""
    out = data["work"] / "stage1"
    result = _train_cli(data, out, 1, *STAGE1_ARGS, "--model", "tiny", check=True)
    return out, result


# -- data ------------------------------------------------------------------------------------------
def test_join_skips_failed_and_absent_images_and_keeps_text_only(data, tiny):
    from sgeo.cache import FeatureStore
    from sgeo.pipeline.features import decode
    from sgeo.pipeline.training.collate import Collator
    from sgeo.pipeline.training.dataset import TrainingDataset
    from sgeo.pipeline.training.join import join_samples, load_samples, manifest_statuses

    model, processor = tiny
    store = FeatureStore.open(data["store"])
    join = join_samples(load_samples(data["stage2"]), manifest_statuses(store))
    assert (join.counts["failed"], join.counts["absent"], join.counts["kept_text"]) == (1, 1, 2)
    assert join.counts["kept_image"] == len(data["ids"]) - 1
    assert "skipped 1 failed, 1 absent" in join.summary()
    # plain (stage 1) skips a text-only sample and cannot take a multi-turn one: refused before any step
    plain = join_samples(load_samples(data["stage2"]), manifest_statuses(store), needs_image=True)
    assert (
        plain.counts["no_image"] == 2
        and plain.counts["invalid"] == len(plain.invalid) == len(data["ids"]) + 1
    )
    assert "(image, caption) pair, not" in plain.refusal("qa.json") and "--skip-invalid" in plain.refusal(
        "qa.json"
    )

    dataset = TrainingDataset(join, processor, "vicuna_v1")
    text = [i for i, row in enumerate(join.rows) if row < 0]
    image = [i for i, row in enumerate(join.rows) if row >= 0][:2]
    order = [text[0], image[1], text[1], image[0]]
    batch = Collator(processor, store)([dataset[i] for i in order])
    rows = [join.rows[image[1]], join.rows[image[0]]]  # features follow the image tokens' order
    want_clip, want_moge = store.read(rows).values()
    assert torch.equal(batch["image_features"]["clip"], decode(want_clip, "bf16"))
    assert torch.equal(batch["image_features"]["moge"], decode(want_moge, "bf16"))
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == 2 * processor.num_image_tokens
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    loss = model(**{k: v for k, v in batch.items() if k != "ids"}).loss
    assert torch.isfinite(loss)

    # a micro-batch without images still runs the adapters (on nothing)
    shapes = {"clip": want_clip.shape[1:], "moge": want_moge.shape[1:]}
    empty = Collator(processor, store, shapes)([dataset[text[0]], dataset[text[1]]])
    assert {name: f.shape[0] for name, f in empty["image_features"].items()} == {"clip": 0, "moge": 0}
    assert torch.isfinite(model(**empty).loss)


def test_batch_order_is_seeded_per_epoch_and_resumes_mid_run():
    from sgeo.pipeline.training.batches import BatchPlan

    plan = BatchPlan(num_samples=23, micro_batch=2, world_size=2, accum=2, seed=5)
    assert plan.steps_per_epoch == 2 and plan.samples_per_epoch == 16
    assert plan.epoch_order(0) == BatchPlan(23, 2, 2, 2, seed=5).epoch_order(0)
    assert plan.epoch_order(0) != plan.epoch_order(1) != BatchPlan(23, 2, 2, 2, seed=6).epoch_order(1)
    for rank in (0, 1):
        full = list(plan.rank_batches(rank, 0, 7))
        assert len(full) == 14 and all(len(b) == 2 for b in full)
        assert list(plan.rank_batches(rank, 3, 7)) == full[6:]  # resume after step 3
    ranks = [sum(plan.rank_batches(r, 0, 2), []) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])  # one epoch: the ranks read disjoint samples

    lengths = tuple(range(100, 123))
    has_image = tuple(i % 3 != 0 for i in range(23))
    grouped = BatchPlan(23, 2, 2, 1, seed=5, lengths=lengths, has_image=has_image)
    for batch in grouped.epoch_order(0)[:-1]:  # all but a possible leftover batch hold one modality
        assert len({has_image[i] for i in batch}) == 1


def test_prefetcher_keeps_order_and_raises_errors():
    from sgeo.pipeline.training.prefetch import Prefetcher

    assert list(Prefetcher(range(50), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad sample")

    batches = Prefetcher(broken())
    assert next(batches) == 1
    with pytest.raises(ValueError, match="bad sample"):
        next(batches)
    batches.close()


def test_global_batch_is_checked_once():
    from sgeo.errors import SgeoError
    from sgeo.jobs.train import STAGE_RECIPES, resolve_batch

    assert resolve_batch(STAGE_RECIPES[1], None, None, None, 1) == (32, 8, 256)
    assert resolve_batch(STAGE_RECIPES[2], None, None, None, 8) == (16, 1, 128)
    assert resolve_batch(STAGE_RECIPES[2], 4, None, None, 2) == (4, 16, 128)
    assert resolve_batch(STAGE_RECIPES[1], 2, 3, None, 2) == (2, 3, 12)
    with pytest.raises(SgeoError, match="not divisible by per-device 3 x 2 ranks"):
        resolve_batch(STAGE_RECIPES[1], 3, None, None, 2)
    with pytest.raises(SgeoError, match="--global-batch 64 != per-device 2 x 1 ranks x accumulation 4 = 8"):
        resolve_batch(STAGE_RECIPES[1], 2, 4, 64, 1)


# -- end to end ------------------------------------------------------------------------------------
def test_stage1_then_stage2_through_the_cli(data, stage1, tiny_dir):
    out1, result = stage1
    assert (
        "skipped 1 failed" in result.stderr
        and "global batch 8 = 4 per device x 1 ranks x 2 accumulation" in result.stderr
    )
    losses = [m["loss"] for m in _metrics(out1)]
    assert [m["step"] for m in _metrics(out1)] == list(range(1, 31))
    assert losses[-1] < losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert (out1 / "loss.png").stat().st_size > 0
    record = json.loads((out1 / "trainable.json").read_text())
    assert record["stage_record"] == {"stage": 1, "lora": None} and record["towers_loaded"] is False
    recorded = json.loads((out1 / "train_config.json").read_text())
    # --gradient-checkpointing auto on a CPU: on, recorded as what the run used (memory_plan.py)
    assert recorded["template"] == "plain" and recorded["gradient_checkpointing"] is True
    start, after1 = _state(tiny_dir), _state(out1)
    changed = _differing(start, after1)
    assert changed == set(record["trainable"]) == {k for k in start if k.startswith("moge_adapter.")}

    out2 = data["work"] / "stage2"
    result = _train_cli(data, out2, 2, *STAGE2_ARGS, "--model", out1, check=True)
    assert "2 text-only" in result.stderr and "skipped 1 failed, 1 absent" in result.stderr
    losses = [m["loss"] for m in _metrics(out2)]
    assert losses[-1] < losses[0]
    assert {m["adapter_lr"] for m in _metrics(out2)} and _metrics(out2)[-1]["lr"] > 0
    record = json.loads((out2 / "trainable.json").read_text())
    trainable = set(record["trainable"])
    assert record["stage_record"]["lora"] == {"r": 8, "alpha": 16, "dropout": 0.05}
    assert {k.split(".")[0] for k in trainable} == {"clip_adapter", "moge_adapter", "language_model"}
    assert all("lora_" in k for k in trainable if k.startswith("language_model"))
    assert (out2 / "lora" / "adapter_model.safetensors").is_file()

    # base weights: exactly the two adapters changed; the LLM is bit-identical and carries no LoRA keys
    from safetensors.torch import load_file

    base1, base2 = load_file(out1 / "model.safetensors"), load_file(out2 / "model.safetensors")
    assert not any("lora" in k for k in base2)
    assert {k.split(".")[0] for k in _differing(base1, base2)} == {"clip_adapter", "moge_adapter"}
    assert _differing(base1, base2) == {
        k for k in base1 if k.split(".")[0] in ("clip_adapter", "moge_adapter")
    }
    # the full stage-2 model (base + lora/): nothing but the trainable tensors differ from the start
    # (LoRA's B starts at zero, so a changed B proves LoRA trained)
    from sgeo.model import LoraSettings, configure_stage, load_model

    start2, _ = load_model(str(out1), load_towers=False)
    configure_stage(start2, 2, LoraSettings(8, 16, 0.05))
    before, after2 = start2.state_dict(), _state(out2)
    assert _differing(before, after2) <= trainable
    lora_b = {k for k in trainable if "lora_B" in k}
    assert lora_b and lora_b <= _differing(before, after2)
    # merged/ computes what base + lora/ computes
    merged, processor = load_model(str(out2 / "merged"), load_towers=False)
    lora_model, _ = load_model(str(out2), load_towers=False)
    ids = torch.tensor([processor.tokenizer("the red box is left of the cube").input_ids])
    torch.testing.assert_close(
        merged(input_ids=ids).logits, lora_model(input_ids=ids).logits, atol=1e-5, rtol=1e-5
    )


class MemoryFeatures:
    """The store's rows and statuses, but fp32 features straight from `encode_images` (no 16-bit rounding)."""

    def __init__(self, store, clip: np.ndarray, moge: np.ndarray):
        self.fingerprint, self.dtype, self._manifest = store.fingerprint, "fp32", store.manifest()
        self.clip, self.moge = clip, moge

    def manifest(self):
        return self._manifest

    def read(self, rows):
        return {"clip": self.clip[rows], "moge": self.moge[rows]}


def test_cached_step_equals_online_step(data, in_process, monkeypatch, tmp_path):
    """What is compared: the loss of step 1 (same seed, so the same batch) of three runs of the real
    trainer: (a) features from an in-memory source holding `encode_images`' fp32 output, with the towers
    made impossible to build; (b) --online, pixels decoded from --image-root and encoded in the loop;
    (c) the bf16 store. (a) == (b) to 1e-5: the cached and online roads meet exactly. (c) differs from (b)
    only by bf16 rounding of the features (checked loosely)."""
    from sgeo.cache import FeatureStore
    from sgeo.jobs.train import LAUNCHER_ENV, TrainConfig, run_train
    from sgeo.model.towers import stack

    def options(out, **kw):
        return TrainConfig(stage=2, data=data["stage2"], store=data["store"], out=tmp_path / out, model="tiny",
                           batch_size=4, grad_accum=1, max_steps=1, num_workers=0, lora_r=8, lora_alpha=16,
                           seed=7, **kw)  # fmt: skip

    def no_towers(*args, **kwargs):
        raise AssertionError("the vision towers were constructed while training from cached features")

    with monkeypatch.context() as patch:
        patch.setattr(stack.VisionTowers, "__init__", no_towers)
        memory = MemoryFeatures(FeatureStore.open(data["store"]), data["clip"], data["moge"])
        cached = run_train(options("cached"), features=memory)["loss"]
        stored = run_train(options("stored"))["loss"]
    launcher = {key: os.environ.get(key) for key in LAUNCHER_ENV}
    online = run_train(options("online", online=True, image_root=data["root"]))["loss"]
    assert {key: os.environ.get(key) for key in LAUNCHER_ENV} == launcher  # in-process runs leave no trace
    assert abs(cached - online) <= 1e-5, (cached, online)
    assert abs(stored - online) <= 1e-3, (stored, online)
    assert json.loads((tmp_path / "online" / "trainable.json").read_text())["towers_loaded"] is True


def test_killed_run_resumes_to_the_uninterrupted_weights(data, stage1):
    reference, _ = stage1
    out = data["work"] / "killed"
    command = [sys.executable, "-m", "sgeo.cli", "train", "--stage", "1", "--data", str(data["stage1"]),
               "--store", data["store"], "--out", str(out), "--model", "tiny", *STAGE1_ARGS]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.time() + 300
    while not (out / "checkpoints" / "latest").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    killed_at = (out / "checkpoints" / "latest").read_text()
    assert not (out / "model.safetensors").exists(), "the run finished before it was killed"

    result = _train_cli(data, out, 1, *STAGE1_ARGS, "--model", "tiny", check=True)
    assert f"resumed from {out / 'checkpoints' / killed_at}" in result.stderr
    assert [m["step"] for m in _metrics(out)] == list(range(1, 31))
    assert _differing(_state(reference), _state(out)) == set()


def test_two_ranks_under_torchrun(data, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sgeo.cli", "train", "--stage", "1", "--data", str(data["stage1"]), "--store", data["store"],
               "--out", str(out), "--batch-size", "2", "--grad-accum", "1", "--max-steps", "3", "--save-every", "2",
               "--num-workers", "0"]  # fmt: skip
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 4 = 2 per device x 2 ranks x 1 accumulation" in result.stderr
    assert [m["step"] for m in _metrics(out)] == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000003"]
    assert len(list((out / "checkpoints" / "step-0000003").glob("zero_pp_rank_*_optim_states.pt"))) == 2
    from sgeo.model import resolve_model

    assert {k.split(".")[0] for k in _differing(_state(resolve_model("tiny").directory), _state(out))} == {
        "moge_adapter"
    }


# -- refusals --------------------------------------------------------------------------------------
def _one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_store_of_other_encoders_is_refused(data, tmp_path):
    from sgeo.pipeline.store_writer import write_store

    other = json.loads(json.dumps(data["fingerprint"]))
    other["towers"]["clip"]["layer"] = -1
    url = str(tmp_path / "other.zarr")
    write_store(url, image_ids=data["ids"][:2], paths=data["ids"][:2], fingerprint=other, shard_size=2,
                features={"clip": torch.from_numpy(data["clip"][:2]), "moge": torch.from_numpy(data["moge"][:2])})  # fmt: skip
    result = run_sgeo(
        "train", "--stage", "1", "--data", data["stage1"], "--store", url, "--out", tmp_path / "o"
    )
    _one_line_error(result, "other.zarr", "tower.layer=-1", "the model has -2")


def test_missing_json_or_store_is_a_one_line_error(data, tmp_path):
    result = run_sgeo("train", "--stage", "1", "--data", tmp_path / "nope.json", "--store", data["store"],
                      "--out", tmp_path / "o")  # fmt: skip
    _one_line_error(result, "training JSON not found")
    result = run_sgeo("train", "--stage", "1", "--data", data["stage1"], "--store", tmp_path / "nope.zarr",
                      "--out", tmp_path / "o")  # fmt: skip
    _one_line_error(result, "nope.zarr", "neither a feature store nor a directory of stores")
    result = run_sgeo("train", "--stage", "1", "--data", data["stage1"], "--out", tmp_path / "o")
    _one_line_error(result, "--store is required")


@pytest.mark.parametrize(
    ("given", "cleaned"),
    [("9.0a", "9.0"), ("8.0;9.0a 10.0a+PTX", "8.0;9.0 10.0+PTX"), ("8.6+PTX", "8.6+PTX"), ("", None)],
)
def test_cuda_arch_list_is_made_readable_for_deepspeeds_op_builder(monkeypatch, given, cleaned):
    """DeepSpeed parses each TORCH_CUDA_ARCH_LIST entry with int(); "9.0a" (set by NGC-style images, seen on
    an H200) failed its fused-Adam build there, so the trainer rewrites arch-specific targets before it."""
    from sgeo.jobs.train.environment import deepspeed_arch_list

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", given)
    assert deepspeed_arch_list() == cleaned
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == (cleaned if cleaned is not None else given)
    if cleaned:  # what DeepSpeed's builder does with it (op_builder/builder.py) now parses
        for cc in cleaned.replace(" ", ";").split(";"):
            tuple(int(part.split("+")[0]) for part in cc.split("."))


def test_a_checkpoint_written_before_an_option_was_added_still_resumes(tmp_path):
    """Its trainer state lacks the new option and names --store as one string: both still match this run."""
    from dataclasses import asdict

    from sgeo.errors import SgeoError
    from sgeo.jobs.train.checkpoints import (
        CHECKPOINTS,
        LATEST,
        TRAINER_STATE,
        check_resumable,
        latest_checkpoint,
    )
    from sgeo.jobs.train.recipe import TrainConfig, training_settings

    data = tmp_path / "data.json"
    data.write_text("[]")
    config = TrainConfig(
        stage=1, data=data, out=tmp_path / "out", store=str(tmp_path / "s"), lora_r=8, lora_alpha=16
    )
    settings = training_settings(config, 1, "cpu", "plain")
    older = json.loads(json.dumps(asdict(settings)))
    older.pop("lora_r"), older.pop("lora_alpha")  # options this trainer state predates
    older["store"] = str(tmp_path / "s")
    step = tmp_path / "out" / CHECKPOINTS / "step-0000001"
    step.mkdir(parents=True)
    (step / TRAINER_STATE).write_text(json.dumps({"step": 1, "resolved": older}))
    (step.parent / LATEST).write_text(step.name)
    check_resumable(settings, latest_checkpoint(settings.out))  # resumes
    older["lr"] = settings.lr * 2  # another learning rate: still refused
    (step / TRAINER_STATE).write_text(json.dumps({"step": 1, "resolved": older}))
    with pytest.raises(SgeoError, match="was trained with lr="):
        check_resumable(settings, latest_checkpoint(settings.out))
