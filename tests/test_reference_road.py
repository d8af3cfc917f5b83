"""The road with the real weights, on tiny stand-ins laid out exactly like the public checkpoints
(tests/reference_layouts.py): resolution without weights, LLaVA's token ids and labels, imported weights equal
to the checkpoints', store pixels as LLaVA's, and every command through the CLI for every way a user names a
reference model."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import open_extracted
from reference_layouts import CLIP_REPO, IMAGE_SIZE, LLAVA_REPO, MOGE_REPO, StandIns, write_all
from sgeo.errors import SgeoError

IGNORE, IMAGE_INDEX = -100, -200
SYSTEM = (  # conv_vicuna_v1, LLaVA's `--version v1`
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> StandIns:
    return write_all(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def road_data(tmp_path_factory) -> dict:
    """Datasets and stores shared by the CLI roads (the same towers give the same stores)."""
    root = tmp_path_factory.mktemp("road")
    return {**_write_datasets(root / "data"), "stores": str(root / "stores")}


@pytest.fixture()
def reference_env(standins, monkeypatch):
    """The three SGEO_*_PATH variables pointing at the stand-ins."""
    monkeypatch.setenv("SGEO_CLIP_PATH", str(standins.clip))
    monkeypatch.setenv("SGEO_MOGE_PATH", str(standins.moge))
    monkeypatch.setenv("SGEO_LLAVA_PATH", str(standins.llava))
    return standins


# -- resolution reads no weights -------------------------------------------------------------------
def _spoiled_copy(source: Path, target: Path) -> Path:
    """A copy of a checkpoint whose weight files are garbage: reading any of them fails."""
    import shutil

    from sgeo.model.tower_fingerprint import WEIGHT_SUFFIXES

    shutil.copytree(source, target, symlinks=False) if source.is_dir() else shutil.copy(source, target)
    for path in [target] if target.is_file() else target.rglob("*"):
        if path.suffix in WEIGHT_SUFFIXES:
            path.write_bytes(b"not weights")
    return target


def test_building_the_processor_opens_no_weight_file(standins, tmp_path, monkeypatch):
    from sgeo.model import load_processor
    from sgeo.model.tower_fingerprint import WEIGHT_SUFFIXES

    clip = _spoiled_copy(standins.clip, tmp_path / "clip")
    moge = _spoiled_copy(standins.moge, tmp_path / "model.pt")
    llava = _spoiled_copy(standins.llava, tmp_path / "llava")
    lora = _spoiled_copy(standins.lora, tmp_path / "lora")
    monkeypatch.setenv("SGEO_CLIP_PATH", str(clip))
    monkeypatch.setenv("SGEO_MOGE_PATH", str(moge))
    monkeypatch.setenv("SGEO_LLAVA_PATH", str(llava))
    opened = []

    def audit(event, args):
        if (
            event == "open"
            and isinstance(args[0], (str, bytes, os.PathLike))
            and Path(os.fsdecode(args[0])).suffix in WEIGHT_SUFFIXES
        ):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)  # hooks cannot be removed; this one only records
    processors = {name: load_processor(name) for name in ("spatialgeo-7b", str(llava), str(lora))}
    assert opened == []
    for processor in processors.values():
        assert processor.tokenization == "llava" and processor.num_image_tokens == 2 * (IMAGE_SIZE // 14) ** 2
        assert processor.image_processor.crop_size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        assert processor.tokenizer("the box").input_ids[0] == 1


def test_each_layout_resolves_to_its_parts(reference_env):
    from sgeo.model import resolve_model

    s = reference_env
    expected = {
        "spatialgeo-7b": ("reference", None), str(s.llava): ("reference", None),
        str(s.merged): ("reference", None), str(s.lora): ("reference-lora", s.llava),
        str(s.stage1): ("reference-stage1", s.llava),
    }  # fmt: skip
    for name, (layout, base) in expected.items():
        resolved = resolve_model(name)
        assert (resolved.layout, resolved.base) == (layout, base), name
        assert {n: t.path for n, t in resolved.towers.items()} == {"clip": str(s.clip), "moge": str(s.moge)}
    # the release's tokenizer comes from its base (it ships none), the merged one carries its own
    assert resolve_model(str(s.lora)).tokenizer_dir == s.llava
    assert resolve_model(str(s.merged)).tokenizer_dir == s.merged


def test_a_release_without_its_base_is_a_one_line_error(standins, monkeypatch, tmp_path):
    from sgeo.model import resolve_model

    monkeypatch.delenv("SGEO_LLAVA_PATH", raising=False)
    monkeypatch.setenv("SGEO_MOGE_PATH", str(standins.moge))
    monkeypatch.setenv("SGEO_CLIP_PATH", str(standins.clip))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for release in (standins.lora, standins.stage1):
        with pytest.raises(SgeoError, match="SGEO_LLAVA_PATH") as error:
            resolve_model(str(release))
        assert "\n" not in str(error.value) and "--model-base" not in str(error.value)


# -- LLaVA's token ids and labels ------------------------------------------------------------------
def oracle_tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """LLaVA's mm_utils.tokenizer_image_token: chunks around <image> tokenized apart, joined by the index."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]

    def insert_separator(items, separator):
        return [element for pair in zip(items, [separator] * len(items), strict=True) for element in pair][
            :-1
        ]

    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for part in insert_separator(chunks, [IMAGE_INDEX] * (offset + 1)):
        ids.extend(part[offset:])
    return ids


def oracle_multimodal(turns: list[dict]) -> list[dict]:
    """LLaVA's preprocess_multimodal: <image> moved to the front of its turn, then the value stripped."""
    out = []
    for turn in turns:
        value = turn["value"]
        if "<image>" in value:
            value = ("<image>\n" + value.replace("<image>", "").strip()).strip()
        out.append({"from": turn["from"], "value": value})
    return out


def oracle_v1(turns: list[dict], tokenizer, has_image: bool, max_length: int = 2048):
    """LLaVA's preprocess_v1 with conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>")."""
    if turns[0]["from"] != "human":
        turns = turns[1:]
    prompt = SYSTEM + " "
    for i, turn in enumerate(turns):
        role = "USER" if turn["from"] == "human" else "ASSISTANT"
        prompt += f"{role}: {turn['value']}" + (" " if i % 2 == 0 else "</s>")
    ids = oracle_tokenizer_image_token(prompt, tokenizer) if has_image else tokenizer(prompt).input_ids
    target = list(ids)
    total = sum(t != tokenizer.pad_token_id for t in target)
    sep = " ASSISTANT: "

    def length(text):
        return (
            len(oracle_tokenizer_image_token(text, tokenizer))
            if has_image
            else len(tokenizer(text).input_ids)
        )

    cur = 1
    target[:cur] = [IGNORE]
    for i, rou in enumerate(prompt.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len, instruction_len = length(rou), length(parts[0]) - 2
        if i != 0 and not tokenizer.legacy:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        for k in range(cur, min(cur + instruction_len, len(target))):
            target[k] = IGNORE
        cur += round_len
    target[cur:] = [IGNORE] * max(0, len(target) - cur)
    if cur < max_length and cur != total:
        target = [IGNORE] * len(target)
    return ids, target


def oracle_plain(turns: list[dict], tokenizer):
    prompt = "<image>" + turns[1]["value"] + "\n"
    ids = oracle_tokenizer_image_token(prompt, tokenizer)
    target = list(ids)
    head = len(oracle_tokenizer_image_token("<image>", tokenizer))
    target[:head] = [IGNORE] * head
    return ids, target


def oracle_generation(turns: list[dict], tokenizer):
    """LLaVA's eval prompt: conv.get_prompt() with the assistant's message None, then tokenizer_image_token."""
    prompt = SYSTEM + " "
    for i, turn in enumerate(turns):
        role = "USER" if turn["from"] == "human" else "ASSISTANT"
        prompt += f"{role}: {turn['value']}" + (" " if i % 2 == 0 else "</s>")
    prompt += "ASSISTANT:"
    return oracle_tokenizer_image_token(prompt, tokenizer)


def _expand(ids, labels, image_id: int, width: int):
    out_ids, out_labels = [], []
    for token, label in zip(ids, labels, strict=True):
        if token == IMAGE_INDEX:
            out_ids += [image_id] * width
            out_labels += [IGNORE] * width
        else:
            out_ids.append(token)
            out_labels.append(label)
    return out_ids, out_labels


WORDS = [
    "the",
    "red",
    "box",
    "is",
    "left",
    "of",
    "a",
    "blue",
    "sphere",
    "how",
    "far",
    "3.5",
    "meters",
    "yes",
    "no,",
    "taller?",
    "wider!",
    "café",
    "中",
    "1",
    "o'clock",
]


def _generated_samples(n: int, seed: int = 0) -> list[tuple[str, dict]]:
    rng = random.Random(seed)

    def text(k=None):
        return " ".join(rng.choice(WORDS) for _ in range(k or rng.randint(1, 9)))

    samples = []
    for i in range(n):
        kind = ["image_first", "image_after", "multi_turn", "text_only", "gpt_first", "plain", "ask"][i % 7]
        rounds = rng.randint(2, 4) if kind in ("multi_turn", "gpt_first") else 1
        turns = []
        for r in range(rounds):
            question = text()
            if r == 0 and kind not in ("text_only",):
                question = f"{question}\n<image>" if kind == "image_after" else f"<image>\n{question}"
                question = "<image>" if i % 13 == 0 else question  # a turn that is only the image
            turns += [{"from": "human", "value": question}, {"from": "gpt", "value": text()}]
        if kind == "gpt_first":
            turns = [{"from": "gpt", "value": text()}, *turns]
        if kind == "plain":
            turns = [
                {"from": "human", "value": "<image>\nDescribe the image briefly."},
                {"from": "gpt", "value": text()},
            ]
        if kind == "ask":
            turns = turns[:-1]
        sample = {"id": str(i), "conversations": turns}
        if kind != "text_only":
            sample["image"] = f"{i}.jpg"
        samples.append((kind, sample))
    return samples


@pytest.mark.parametrize("legacy", [False, True])
def test_token_ids_and_labels_equal_llavas(reference_env, tmp_path, legacy):
    """LLaVA-1.5's tokenizer says legacy=false, which switches on the round-length correction of
    preprocess_v1 (a later round alone starts '▁' 'USER', in its conversation 'USER'); both branches of that
    rule are checked."""
    import shutil

    from sgeo.model import SpatialGeoProcessor, load_processor
    from sgeo.model.processing import load_tokenizer
    from sgeo.pipeline.samples import check_sample

    processor = load_processor(str(reference_env.llava))
    if legacy:
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(reference_env.llava / name, tmp_path / name)
        config = json.loads((tmp_path / "tokenizer_config.json").read_text())
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": True}))
        processor = SpatialGeoProcessor(processor.image_processor, load_tokenizer(tmp_path),
                                        processor.num_image_tokens, tokenization="llava")  # fmt: skip
    assert processor.tokenizer.legacy is legacy
    width, image_id = processor.num_image_tokens, processor.image_token_id
    # the oracle tokenizes as LLaVA's pinned slow LlamaTokenizer does, whatever transformers is installed
    from test_llava_tokenization import Slow437LlamaTokenizer

    tokenizer = Slow437LlamaTokenizer(tmp_path if legacy else reference_env.llava, legacy=legacy)
    kinds = set()
    supervised = 0
    for kind, sample in _generated_samples(210):
        turns = oracle_multimodal(sample["conversations"])
        has_image = "image" in sample
        if kind == "plain":
            want = oracle_plain(turns, tokenizer)
            got = processor.tokenize(sample["conversations"], "plain")
        elif kind == "ask":
            ids = oracle_generation(turns, tokenizer)
            want = (ids, [IGNORE] * len(ids))
            got = processor.tokenize(sample["conversations"], "vicuna_v1", add_generation_prompt=True)
        else:
            want = oracle_v1(turns, tokenizer, has_image)
            cleaned = check_sample(sample).sample  # LLaVA's first-turn rule, as the trainer applies it
            got = processor.tokenize(cleaned["conversations"], "vicuna_v1")
        want_ids, want_labels = _expand(*want, image_id, width)
        assert got["input_ids"] == want_ids, (kind, sample)
        assert got["labels"] == want_labels, (kind, sample)
        kinds.add(kind)
        supervised += sum(label != IGNORE for label in want_labels) > 0
    assert len(kinds) == 7
    assert (
        supervised == 180
    )  # every sample with an answer trains: the rounds line up, as on Vicuna's tokenizer
    # the text after an image starts with SentencePiece's word-start piece, as LLaVA trained on it
    ids = processor.tokenize([{"from": "human", "value": "<image>\nWhat?"}], "vicuna_v1", True)["input_ids"]
    after = ids[ids.index(image_id) + width]
    assert processor.tokenizer.convert_ids_to_tokens(after) == "▁"


# -- imported weights ------------------------------------------------------------------------------
def _assert_same(ours: torch.Tensor, theirs: torch.Tensor, key: str) -> None:
    assert torch.equal(ours, theirs.to(ours.dtype)), key


def test_imported_weights_equal_the_checkpoints(reference_env):
    from safetensors.torch import load_file

    from sgeo.model import load_model

    s, t = reference_env, reference_env.tensors
    llava, _ = load_model(str(s.llava), load_towers=False)
    state = llava.state_dict()
    for key, value in t["llava"].items():
        if "vision_tower" in key:
            continue
        ours = (
            key.replace("model.mm_projector.", "clip_adapter.")
            if "mm_projector" in key
            else "language_model." + key
        )
        _assert_same(state[ours], value, key)
    clip, moge = llava.config.towers
    assert moge.options["backbone"] == "dinov2_vits14" and clip.source == str(s.clip)

    stage1, _ = load_model(str(s.stage1), load_towers=False)
    state1 = stage1.state_dict()
    for key, value in t["stage1"].items():
        _assert_same(
            state1[key.replace("model.moge_mm_projector_list.", "moge_adapter.adapters.")], value, key
        )
    _assert_same(state1["language_model.lm_head.weight"], t["llava"]["lm_head.weight"], "lm_head")

    lora, _ = load_model(str(s.lora), load_towers=False)
    state2 = lora.state_dict()
    for key, value in t["non_lora"].items():
        name = key.removeprefix("base_model.model.model.")
        name = name.replace("mm_projector.", "clip_adapter.").replace(
            "moge_mm_projector_list.", "moge_adapter.adapters."
        )
        _assert_same(state2[name], value, key)
    adapter = load_file(s.lora / "adapter_model.safetensors")
    config = json.loads((s.lora / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    for layer, proj in (("0", "self_attn.q_proj"), ("1", "mlp.down_proj")):
        prefix = f"base_model.model.model.layers.{layer}.{proj}"
        base = t["llava"][f"model.layers.{layer}.{proj}.weight"].float()
        want = (
            base
            + scale * adapter[f"{prefix}.lora_B.weight"].float() @ adapter[f"{prefix}.lora_A.weight"].float()
        )
        got = state2[f"language_model.model.layers.{layer}.{proj}.weight"]
        assert torch.allclose(got, want, atol=1e-6), prefix

    merged, _ = load_model(str(s.merged), load_towers=False)
    state3 = merged.state_dict()
    for key, value in t["merged"].items():
        if "vision_tower" in key:
            continue
        name = key.replace("model.mm_projector.", "clip_adapter.").replace(
            "model.moge_mm_projector_list.", "moge_adapter.adapters."
        )
        _assert_same(state3[name if "adapter" in name else "language_model." + key], value, key)


def test_release_moge_backbone_loads_from_its_vit_model_pt(reference_env, monkeypatch):
    from sgeo.model import load_model

    s = reference_env
    with_moge_pt, _ = load_model("spatialgeo-7b")
    monkeypatch.setenv("SGEO_MOGE_PATH", str(s.vit_model))
    with_vit_model, _ = load_model("spatialgeo-7b")
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(
        with_moge_pt.encode_images(pixels)["moge"], with_vit_model.encode_images(pixels)["moge"]
    )
    broken = s.vit_model.with_name("broken_vit_model.pt")
    state = torch.load(s.vit_model, weights_only=True)
    state.pop("norm.weight")
    torch.save(state, broken)
    monkeypatch.setenv("SGEO_MOGE_PATH", str(broken))
    with pytest.raises(SgeoError, match="lacks DINOv2 weights .*norm.weight"):
        load_model("spatialgeo-7b")


# -- the pixels of the stores ----------------------------------------------------------------------
def _expand2square(image: Image.Image, background) -> Image.Image:
    """LLaVA's train.py expand2square."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def test_store_pixels_are_llavas_crop_for_pretraining_and_pad_for_finetuning(reference_env, tmp_path):
    from transformers import CLIPImageProcessor

    from sgeo.jobs.extract import read_image
    from sgeo.model import load_processor

    clip_processor = CLIPImageProcessor.from_pretrained(
        reference_env.clip
    )  # as LLaVA's vision tower builds it
    image = Image.effect_mandelbrot((160, 96), (-2, -1, 1, 1), 60).convert("RGB")
    (tmp_path / "images").mkdir()
    image.save(tmp_path / "images" / "a.png")
    for layout, mode in (("llava-pretrain", "crop"), ("llava-mix665k", "pad")):
        assert _default_mode(layout) == mode
        processor = load_processor("spatialgeo-7b")
        processor.image_aspect_ratio = mode
        record, pixels = read_image(str(tmp_path / "images"), "a.png", processor, (3, IMAGE_SIZE, IMAGE_SIZE))
        assert record["status"] == "ok"
        if mode == "crop":
            want = clip_processor(image, return_tensors="pt")["pixel_values"][0]
        else:
            background = tuple(int(x * 255) for x in clip_processor.image_mean)
            want = clip_processor(_expand2square(image, background), return_tensors="pt")["pixel_values"][0]
        assert torch.equal(torch.from_numpy(pixels), want), mode


def _default_mode(layout: str) -> str:
    from sgeo.pipeline.datasets import LlavaMix665k, LlavaPretrain

    return {"llava-pretrain": LlavaPretrain, "llava-mix665k": LlavaMix665k}[layout].image_aspect_ratio


# -- every command through the CLI -----------------------------------------------------------------
def _write_datasets(root: Path) -> dict[str, Path]:
    """An LCS-558K-shaped pretraining set and a mix665k-shaped finetuning set (4 images each), a bench."""
    rng = random.Random(0)
    pretrain, finetune = root / "pretrain", root / "finetune"
    (pretrain / "images" / "00000").mkdir(parents=True)
    (finetune / "coco" / "train2017").mkdir(parents=True)
    captions, qa, bench = [], [], []
    for i in range(4):
        image = Image.new("RGB", (rng.randint(60, 200), rng.randint(60, 200)), (40 * i, 90, 200 - 40 * i))
        image.save(pretrain / "images" / "00000" / f"{i:09d}.jpg")
        image.save(finetune / "coco" / "train2017" / f"{i:012d}.jpg")
        captions.append({"id": f"{i:09d}", "image": f"00000/{i:09d}.jpg", "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": f"a box of colour {i}"}]})  # fmt: skip
        turns = [{"from": "human", "value": "<image>\nIs the box red?"}, {"from": "gpt", "value": "No."},
                 {"from": "human", "value": "How far is it?"}, {"from": "gpt", "value": f"{i + 1} meters."}]  # fmt: skip
        if i == 3:
            turns = [{"from": "gpt", "value": "Hello."}, *turns]  # LLaVA drops a first turn from gpt
        qa.append({"id": f"qa{i}", "image": f"coco/train2017/{i:012d}.jpg", "conversations": turns})
        bench.append({"id": i, "file_path": f"coco/train2017/{i:012d}.jpg",
                      "conversations": [{"from": "human", "value": "<image>\nHow far is the box?"},
                                        {"from": "gpt", "value": f"{i + 1} meters"}],
                      "qa_info": {"category": "direct_distance", "type": "quantitative"}})  # fmt: skip
    (pretrain / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(captions))
    (finetune / "llava_v1_5_mix665k.json").write_text(json.dumps(qa))
    (finetune / "bench.json").write_text(json.dumps(bench))
    return {
        "pretrain": pretrain,
        "finetune": finetune,
        "image": finetune / "coco" / "train2017" / f"{0:012d}.jpg",
    }


def _road(model: str, data: dict, work: Path, stores: str) -> list[list[str]]:
    """info, extract (both sets), train stage 1 and 2, ask and eval, as a user types them."""
    train = ["--batch-size", "2", "--grad-accum", "1", "--max-steps", "1", "--num-workers", "0", "--lora-r", "4",
             "--lora-alpha", "8"]  # fmt: skip
    s1, s2 = work / "stage1", work / "stage2"
    return [
        ["info", "--model", model, "--json"],
        ["extract", "--dataset", "llava-pretrain", "--root", data["pretrain"], "--store", f"{stores}/pretrain.zarr",
         "--model", model, "--num-cpus", "2", "--shard-size", "4"],
        ["extract", "--dataset", "llava-mix665k", "--root", data["finetune"], "--store", f"{stores}/finetune.zarr",
         "--model", model, "--num-cpus", "2", "--shard-size", "4"],
        ["train", "--stage", "1", "--model", model, "--data", data["pretrain"] / "blip_laion_cc_sbu_558k.json",
         "--store", f"{stores}/pretrain.zarr", "--out", s1, *train[:-4]],
        ["train", "--stage", "2", "--model", s1, "--data", data["finetune"] / "llava_v1_5_mix665k.json",
         "--store", f"{stores}/finetune.zarr", "--out", s2, "--merge-lora", *train],
        ["ask", data["image"], "How far is the box?", "--model", model, "--json", "--max-new-tokens", "4"],
        ["ask", data["image"], "How far is the box?", "--model", s2 / "merged", "--json", "--max-new-tokens", "4"],
        ["eval", "--bench", "spatialrgpt", "--data", data["finetune"] / "bench.json", "--model", model, "--out",
         work / "eval", "--max-new-tokens", "4", "--batch-size", "2"],
    ]  # fmt: skip


def _run_batch(commands: list[list], env: dict, tmp_path: Path) -> list[dict]:
    """Every command through `sgeo.cli.main` in one fresh process, with only these SGEO_* variables."""
    from conftest import run_sgeo_batch

    cleared = {k: "" for k in os.environ if k.startswith("SGEO_") and k != "SGEO_HOME" and k not in env}
    return run_sgeo_batch(commands, {**cleared, **env})


def _assert_clean(results: list[dict], label: str) -> dict[str, dict]:
    for result in results:
        where = f"{label}: sgeo {' '.join(result['args'])}"
        assert result["code"] == 0, f"{where} exited {result['code']}:\n{result['stderr'][-2500:]}"
        assert "Traceback" not in result["stderr"], where
    return {
        result["args"][0] + ("" if result["args"][0] != "ask" else str(i)): result
        for i, result in enumerate(results)
    }


def test_every_command_with_the_reference_layouts(standins, road_data, tmp_path):
    """spatialgeo-7b (SGEO_*_PATH), LLAVA_DIR, the LoRA, merged and stage-1 releases, and vit_model.pt."""
    s, data, stores = standins, road_data, road_data["stores"]
    env = {"SGEO_CLIP_PATH": str(s.clip), "SGEO_MOGE_PATH": str(s.moge), "SGEO_LLAVA_PATH": str(s.llava)}
    commands = []
    for name, model in (("7b", "spatialgeo-7b"), ("llava", s.llava), ("lora", s.lora), ("merged", s.merged),
                        ("stage1", s.stage1)):  # fmt: skip
        commands += _road(str(model), data, tmp_path / name, stores)  # same towers: the stores are shared
    results = _run_batch(commands, env, tmp_path)
    vit_results = _run_batch(
        _road("spatialgeo-7b", data, tmp_path / "vit", str(tmp_path / "vit-stores")),
        {**env, "SGEO_MOGE_PATH": str(s.vit_model)}, tmp_path,
    )  # fmt: skip
    _assert_clean(results, "SGEO_*_PATH")
    _assert_clean(vit_results, "vit_model.pt")
    by_command = {}
    for result in results:
        by_command.setdefault(result["args"][0], []).append(result)
    info = json.loads(by_command["info"][0]["stdout"])
    assert info["weights"]["layout"] == "reference" and info["visual_tokens_per_image"] == 128
    assert "ok" in by_command["extract"][0]["stdout"]
    # later models share the towers: their extract finds every shard committed and encodes nothing
    assert all(" 0 ok" in r["stdout"] and "4 skipped" in r["stdout"] for r in by_command["extract"][2:])
    for result in by_command["ask"]:
        assert isinstance(json.loads(result["stdout"].strip().splitlines()[-1])["answer"], str)
    stage1_config = json.loads((tmp_path / "7b" / "stage1" / "train_config.json").read_text())
    assert (
        stage1_config["image_aspect_ratio"] == "crop"
        and stage1_config["model_parts"]["layout"] == "reference"
    )
    stage2_config = json.loads((tmp_path / "7b" / "stage2" / "train_config.json").read_text())
    assert stage2_config["image_aspect_ratio"] == "pad"
    assert "dropped the first turn" in by_command["train"][1]["stderr"]
    saved = json.loads((tmp_path / "7b" / "stage1" / "config.json").read_text())
    assert _sources(saved)["clip"] == str(s.clip)  # an explicit path stays the path the user gave
    _check_store_rows(Path(stores), s, data)


def _sources(config: dict) -> dict:
    """{tower: source} of a saved config.json."""
    return {tower["name"]: tower["source"] for tower in config["vision_towers"]}


def _check_store_rows(stores: Path, s: StandIns, data: dict) -> None:
    """Store rows are the towers' features of LLaVA-preprocessed pixels (crop for LCS-558K, pad for the mix)."""
    from transformers import CLIPImageProcessor

    from sgeo.model import load_encoders
    from sgeo.pipeline.features import decode

    os.environ.update(SGEO_CLIP_PATH=str(s.clip), SGEO_MOGE_PATH=str(s.moge), SGEO_LLAVA_PATH=str(s.llava))
    try:
        towers = load_encoders("spatialgeo-7b")
    finally:
        for key in ("SGEO_CLIP_PATH", "SGEO_MOGE_PATH", "SGEO_LLAVA_PATH"):
            os.environ.pop(key)
    clip_processor = CLIPImageProcessor.from_pretrained(s.clip)
    background = tuple(int(x * 255) for x in clip_processor.image_mean)
    for store_name, root, mode in (
        ("pretrain", data["pretrain"] / "images", "crop"),
        ("finetune", data["finetune"], "pad"),
    ):
        store = open_extracted(stores / f"{store_name}.zarr")
        assert store.fingerprint["preprocessing"]["image_aspect_ratio"] == mode
        image_id = store.manifest().column("image_id").to_pylist()[1]
        image = Image.open(root / image_id).convert("RGB")
        image = image if mode == "crop" else _expand2square(image, background)
        pixels = clip_processor(image, return_tensors="pt")["pixel_values"]
        clip, moge = towers.encode_images(pixels).values()
        stored_clip, stored_moge = store.read([1]).values()
        assert torch.allclose(
            decode(stored_clip, store.dtypes["clip"]).float(), clip.to(torch.bfloat16).float(), atol=1e-2
        )
        assert torch.allclose(
            decode(stored_moge, store.dtypes["moge"]).float(), moge.to(torch.bfloat16).float(), atol=1e-2
        )


def test_spatialgeo_7b_found_in_the_hf_cache(standins, road_data, tmp_path):
    """No SGEO_* variable: the three parts come from $HF_HOME/hub, as `huggingface-cli download` leaves them
    (the same files as the SGEO_*_PATH road's, so the same fingerprint: its stores are reused)."""
    results = _run_batch(_road("spatialgeo-7b", road_data, tmp_path / "run", road_data["stores"]),
                         {"HF_HOME": str(standins.hf_home), "HF_HUB_OFFLINE": "1"}, tmp_path)  # fmt: skip
    _assert_clean(results, "HF cache")
    info = json.loads(results[0]["stdout"])
    assert info["weights"]["clip"].startswith(str(standins.hf_home))
    saved = json.loads((tmp_path / "run" / "stage1" / "config.json").read_text())
    assert _sources(saved) == {"clip": CLIP_REPO, "moge": MOGE_REPO}  # hub ids: the dir stays portable
    assert LLAVA_REPO  # the base was located through the cache too (the run above needed it)


def test_coco_captions_become_training_json(tmp_path):
    from conftest import run_sgeo

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    Image.new("RGB", (8, 8)).save(root / "train2017" / "000000000001.jpg")
    annotations = {"images": [{"id": 1, "file_name": "000000000001.jpg"}],
                   "annotations": [{"image_id": 1, "caption": " A black square. "}]}  # fmt: skip
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps(annotations))
    out = tmp_path / "coco_captions.json"
    result = run_sgeo("data", "coco", "--root", root, "--split", "train2017", "--out", out, check=True)
    assert "1 caption samples" in result.stdout
    (sample,) = json.loads(out.read_text())
    assert sample["image"] == "train2017/000000000001.jpg"
    assert sample["conversations"][1] == {"from": "gpt", "value": "A black square."}
