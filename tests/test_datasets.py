"""Dataset layouts built as tiny real folders: ids, dedup, order, samples and errors."""

import json
from pathlib import Path

import pytest
from PIL import Image

from sgeo.errors import SgeoError
from sgeo.pipeline.datasets import ImageRef, get_dataset, known_datasets
from sgeo.pipeline.images import ImageDecodeError, PathEscapeError
from sgeo.synthetic import generate_synthetic


def _img(path: Path, colour=(200, 30, 30), size=(6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)  # format from the extension, case-insensitively


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _conv(question: str, answer: str, image: bool = True) -> list[dict]:
    return [
        {"from": "human", "value": f"<image>\n{question}" if image else question},
        {"from": "gpt", "value": answer},
    ]


def _ids(ds) -> list[str]:
    return [r.image_id for r in ds.images()]


def test_coco_ids_order_and_first_caption(tmp_path):
    for name in ("b.jpg", "a.jpg", "c.jpg"):
        _img(tmp_path / "train2017" / name)
    _json(
        tmp_path / "annotations" / "captions_train2017.json",
        {
            "images": [
                {"id": 2, "file_name": "b.jpg"},
                {"id": 1, "file_name": "a.jpg"},
                {"id": 3, "file_name": "c.jpg"},
            ],
            "annotations": [
                {"id": 10, "image_id": 2, "caption": "A bee. "},
                {"id": 11, "image_id": 1, "caption": "First caption of a."},
                {"id": 12, "image_id": 1, "caption": "Second caption of a."},
            ],
        },
    )
    ds = get_dataset("coco", tmp_path)
    assert ds.name == "coco" and ds.split == "train2017" and ds.image_root == tmp_path
    assert _ids(ds) == ["train2017/a.jpg", "train2017/b.jpg", "train2017/c.jpg"]
    samples = ds.samples()
    assert [s["id"] for s in samples] == ["1", "2"]  # c.jpg has no caption, so no sample
    assert samples[0]["image"] == "train2017/a.jpg"
    assert samples[0]["conversations"][0] == {
        "from": "human",
        "value": "<image>\nDescribe the image briefly.",
    }
    assert samples[0]["conversations"][1] == {"from": "gpt", "value": "First caption of a."}
    assert samples[1]["conversations"][1]["value"] == "A bee."
    assert ds.default_json() is None
    im, _ = ds.open_image(ImageRef("train2017/c.jpg"))
    assert im.size == (6, 4)


def test_coco_val_split_and_errors(tmp_path):
    _img(tmp_path / "val2017" / "v.jpg")
    _json(
        tmp_path / "annotations" / "captions_val2017.json",
        {"images": [{"id": 5, "file_name": "v.jpg"}], "annotations": []},
    )
    assert _ids(get_dataset("coco", tmp_path, split="val2017")) == ["val2017/v.jpg"]
    with pytest.raises(SgeoError, match="captions_train2017.json"):
        get_dataset("coco", tmp_path)  # the default split has no annotation file here
    with pytest.raises(SgeoError, match="no split 'test2015'.*train2017, val2017"):
        get_dataset("coco", tmp_path, split="test2015")


def test_llava_pretrain_ids_are_the_json_image_field_relative_to_images(tmp_path):
    records = [
        {
            "id": "004539375",
            "image": "00453/004539375.jpg",
            "conversations": _conv("Render a clear caption.", "a dog"),
        },
        {"id": "000001", "image": "00000/000001.jpg", "conversations": _conv("Describe.", "a cat")},
        {"id": "000001b", "image": "00000/000001.jpg", "conversations": _conv("Describe.", "the same cat")},
    ]
    _json(tmp_path / "blip_laion_cc_sbu_558k.json", records)
    _img(tmp_path / "images" / "00453" / "004539375.jpg", (0, 0, 250))
    _img(tmp_path / "images" / "00000" / "000001.jpg")
    ds = get_dataset("llava-pretrain", tmp_path)
    assert ds.image_root == tmp_path / "images"
    assert ds.default_json() == tmp_path / "blip_laion_cc_sbu_558k.json"
    assert _ids(ds) == ["00000/000001.jpg", "00453/004539375.jpg"]  # duplicate once, sorted
    assert ds.samples() == records  # samples join to store rows by their verbatim "image"
    assert ds.path_of(ImageRef("00453/004539375.jpg")) == (tmp_path / "images/00453/004539375.jpg").resolve()
    im, _ = ds.open_image(ImageRef("00453/004539375.jpg"))
    assert im.getpixel((1, 1))[2] > 200


def test_llava_mix665k_text_only_duplicates_and_escapes(tmp_path):
    records = [
        {
            "id": "000000033471",
            "image": "coco/train2017/000000033471.jpg",
            "conversations": _conv("What?", "A bus."),
        },
        {"id": "text_only_1", "conversations": _conv("Hello?", "Hi.", image=False)},
        {"id": 42, "image": "gqa/images/2354786.jpg", "conversations": _conv("Where?", "Left.")},
        {"id": "dup", "image": "coco/train2017/000000033471.jpg", "conversations": _conv("Colour?", "Red.")},
        {"id": "other", "image": "my_folder/x.png", "conversations": _conv("Count?", "Two.")},
        {"id": "evil", "image": "../outside.png", "conversations": _conv("Sneaky?", "Yes.")},
    ]
    _json(tmp_path / "data" / "llava_v1_5_mix665k.json", records)
    _img(tmp_path / "data" / "coco" / "train2017" / "000000033471.jpg")
    _img(tmp_path / "data" / "gqa" / "images" / "2354786.jpg")
    _img(tmp_path / "data" / "my_folder" / "x.png")
    _img(tmp_path / "outside.png")
    ds = get_dataset("llava-mix665k", tmp_path / "data")
    assert _ids(ds) == [
        "../outside.png",
        "coco/train2017/000000033471.jpg",
        "gqa/images/2354786.jpg",
        "my_folder/x.png",
    ]
    samples = ds.samples()
    assert len(samples) == 6 and "image" not in samples[1]
    assert samples[2]["id"] == "42"  # ids are strings
    for ref in ds.images()[1:]:
        ds.open_image(ref)
    with pytest.raises(PathEscapeError):
        ds.open_image(ImageRef("../outside.png"))  # listed, but never read


def test_llava_json_must_be_a_list_of_samples(tmp_path):
    _json(tmp_path / "llava_v1_5_mix665k.json", {"not": "a list"})
    with pytest.raises(SgeoError, match="JSON list"):
        get_dataset("llava-mix665k", tmp_path).images()
    (tmp_path / "llava_v1_5_mix665k.json").write_text("[{")
    with pytest.raises(SgeoError, match="not valid JSON"):
        get_dataset("llava-mix665k", tmp_path).samples()


def test_folder_finds_images_recursively_case_insensitively(tmp_path):
    for rel in ("A.JPG", "b.Png", "sub/c.webp", "sub/deeper/d.TIFF", "sub/e.jpeg", "z.bmp", "g.gif"):
        _img(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub" / "archive.zip").write_bytes(b"PK")
    (tmp_path / "._A.JPG").write_bytes(b"\0\5\26\7")  # macOS resource fork
    _img(tmp_path / ".cache" / "thumb.png")
    ds = get_dataset("folder", tmp_path)
    ids = _ids(ds)
    assert ids == ["A.JPG", "b.Png", "g.gif", "sub/c.webp", "sub/deeper/d.TIFF", "sub/e.jpeg", "z.bmp"]
    assert ds.samples() == [] and ds.default_json() is None
    for ref in ds.images():
        assert ds.open_image(ref)[0].mode == "RGB"


def test_decode_failures_surface_as_errors_naming_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = get_dataset("folder", tmp_path)
    assert _ids(ds) == ["broken.jpg"]
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        ds.open_image(ds.images()[0])


def test_synthetic_layout(tmp_path):
    generate_synthetic(tmp_path / "syn", 3, seed=5, image_size=(64, 48), n_eval=2)
    ds = get_dataset("synthetic", tmp_path / "syn")
    assert _ids(ds) == ["images/000000.png", "images/000001.png", "images/000002.png"]
    assert ds.stage_json(1) == tmp_path / "syn" / "captions.json"
    assert ds.stage_json(2) == ds.default_json() == tmp_path / "syn" / "spatial_qa.json"
    with pytest.raises(SgeoError, match="stage 3"):
        ds.stage_json(3)
    samples = ds.samples()
    assert len(samples) == 3 and samples[0]["conversations"][0]["value"].startswith("<image>\n")
    assert samples == json.loads(ds.stage_json(2).read_text())
    assert ds.open_image(ds.images()[2])[0].size == (64, 48)

    ev = get_dataset("synthetic", tmp_path / "syn", split="eval")
    assert ev.image_root == tmp_path / "syn" / "eval"
    assert _ids(ev) == ["images/000000.png", "images/000001.png"]
    assert {s["image"] for s in ev.samples()} == set(_ids(ev))
    assert ev.open_image(ev.images()[1])[0].size == (64, 48)


def test_unknown_name_missing_root_and_split_errors(tmp_path):
    with pytest.raises(SgeoError, match="unknown dataset 'imagenet'") as e:
        get_dataset("imagenet", tmp_path)
    for name in ("coco", "folder", "llava-mix665k", "llava-pretrain", "synthetic"):
        assert name in str(e.value)
        assert name in known_datasets()
    with pytest.raises(SgeoError, match="dataset root not found: .*nowhere"):
        get_dataset("folder", tmp_path / "nowhere")
    with pytest.raises(SgeoError, match="annotation file not found: .*blip_laion_cc_sbu_558k.json"):
        get_dataset("llava-pretrain", tmp_path)
    with pytest.raises(SgeoError, match="captions.json"):
        get_dataset("synthetic", tmp_path)
    with pytest.raises(SgeoError, match="has no split"):
        get_dataset("folder", tmp_path, split="train")


def test_a_dataset_file_and_the_trainer_refuse_a_non_string_image_by_one_rule(tmp_path):
    """One rule for what a LLaVA sample is (`samples.sample_problem`): the dataset reader's refusal and the
    trainer's check say the same thing, the reader's on one line naming the file and the sample."""
    from sgeo.pipeline.datasets import read_llava_samples
    from sgeo.pipeline.samples import check_sample

    bad = {"image": ["a.jpg"], "conversations": [{"from": "human", "value": "<image>\nHi"}]}
    path = tmp_path / "samples.json"
    path.write_text(json.dumps([bad]))
    with pytest.raises(SgeoError) as refused:
        read_llava_samples(path, "training JSON")
    message = str(refused.value)
    assert "\n" not in message and message.endswith(
        "sample 0 has a non-string 'image' field ['a.jpg']; is this a LLaVA-format file?"
    ), message
    assert check_sample(bad).problem == "has a non-string 'image' field ['a.jpg']"


def test_the_trainer_and_the_renderer_refuse_turns_out_of_order_with_one_rule():
    """One alternation rule (`conversation.turn_order_problem`): the trainer's sample check and the prompt
    renderer refuse two human turns in a row with the same one-line reason."""
    from sgeo.model.conversation import normalise_turns
    from sgeo.pipeline.samples import check_sample

    turns = [{"from": "human", "value": "Hi"}, {"from": "human", "value": "Hi again"}]
    with pytest.raises(ValueError) as refused:
        normalise_turns(turns)
    assert str(refused.value) == check_sample({"conversations": turns}).problem
    assert str(refused.value) == "turn 1 is from 'human'; turns must alternate human, gpt"
