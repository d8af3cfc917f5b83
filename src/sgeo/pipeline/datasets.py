"""Dataset layouts on disk: which images a dataset holds and its LLaVA-format training samples.

One rule for every layout: a dataset has an `image_root`, and `ImageRef.image_id` is a posix path
relative to it, written exactly as the dataset's JSON writes it. JSON samples therefore join to
feature-store rows by their verbatim `image` string. Paths are resolved (and escapes refused) only when
an image is opened, so a bad entry is listed, refused and recorded, never read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from sgeo import atomic
from sgeo.errors import SgeoError
from sgeo.model.conversation import question_turn
from sgeo.pipeline.images import DEFAULT_MAX_PIXELS, load_image, resolve_inside
from sgeo.pipeline.json_files import read_json
from sgeo.pipeline.names import SYNTHETIC_BENCH, SYNTHETIC_CAPTIONS, SYNTHETIC_EVAL, SYNTHETIC_QA
from sgeo.pipeline.samples import sample_problem

CAPTION_PROMPT = "Describe the image briefly."
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageRef:
    """One image of a dataset: its path relative to the dataset's `image_root`, as the JSON writes it."""

    image_id: str


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise SgeoError(f"{what} not found: {path}; check the dataset root and layout")
    # not UTF-8, malformed or nested too deeply for the parser: one line naming the file
    return read_json(path, f"{what} ")


def read_json_list(path: Path, what: str) -> list:
    """A JSON file that must hold a list; its items are not checked here."""
    records = _read_json(path, what)
    if not isinstance(records, list):
        raise SgeoError(f"{path} must hold a JSON list of samples, found {type(records).__name__}")
    return records


def _check_samples(records: Any, path: Path) -> list[dict]:
    """Check the LLaVA sample shape once, so a malformed file fails here and not mid-training."""
    if not isinstance(records, list):
        raise SgeoError(f"{path} must hold a JSON list of samples, found {type(records).__name__}")
    for i, r in enumerate(records):
        problem = sample_problem(r)  # what training refuses turn by turn is the trainer's (--skip-invalid)
        if problem:
            raise SgeoError(f"{path}: sample {i} {problem}; is this a LLaVA-format file?")
    return records


def read_llava_samples(path: Path, what: str) -> list[dict]:
    """A LLaVA-format JSON sample list (dataset annotations or training data), checked once."""
    return _check_samples(_read_json(path, what), path)


def _unique_refs(ids: Iterable[str]) -> list[ImageRef]:
    return [ImageRef(i) for i in sorted(set(ids))]


def _caption_sample(sample_id: str, image_id: str, caption: str) -> dict:
    return {
        "id": sample_id,
        "image": image_id,
        "conversations": [
            question_turn(CAPTION_PROMPT, first=True),
            {"from": "gpt", "value": caption.strip()},
        ],
    }


class Dataset:
    """A dataset layout under `root`. Subclasses set `image_root` and implement `images` and `samples`."""

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ()
    # How its images are made square for the encoders: LLaVA-1.5 pads finetuning images to a square and
    # gives pretraining images CLIP's resize + centre crop (its pretrain script passes no aspect ratio).
    image_aspect_ratio: ClassVar[str] = "pad"

    def __init__(self, root: str | Path, *, split: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SgeoError(f"dataset root not found: {self.root}; pass the folder that holds the dataset")
        if split is not None and split not in self.splits:
            known = ", ".join(self.splits) if self.splits else "none"
            raise SgeoError(f"dataset {self.name!r} has no split {split!r}; known splits: {known}")
        self.split = split if split is not None else (self.splits[0] if self.splits else None)
        self.image_root = self.root
        for path in self.annotation_files():
            if not path.is_file():
                raise SgeoError(
                    f"{self.name} annotation file not found: {path}; check the dataset root and layout"
                )

    def annotation_files(self) -> list[Path]:
        """Files the layout needs; checked when the dataset is opened."""
        return []

    def images(self) -> list[ImageRef]:
        """Every image once, sorted by image_id."""
        raise NotImplementedError

    def samples(self) -> list[dict]:
        """LLaVA-format training samples (text-only ones included, without an "image" key)."""
        return []

    def default_json(self) -> Path | None:
        """The JSON file a trainer should read for this layout, or None when samples live in memory only."""
        return None

    def path_of(self, ref: ImageRef) -> Path:
        """The file behind `ref`; raises PathEscapeError if it lies outside `image_root`."""
        return resolve_inside(self.image_root, ref.image_id)

    def open_image(self, ref: ImageRef, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, bytes]:
        """Decode `ref` to RGB; raises PathEscapeError or ImageDecodeError (both SgeoError)."""
        return load_image(self.path_of(ref), max_pixels=max_pixels)

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return f"{type(self).__name__}({str(self.root)!r}{split})"


_REGISTRY: dict[str, type[Dataset]] = {}


def register_dataset(name: str) -> Callable[[type[Dataset]], type[Dataset]]:
    """Class decorator: make a layout available to `get_dataset` under `name`."""

    def deco(cls: type[Dataset]) -> type[Dataset]:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def known_datasets() -> list[str]:
    return sorted(_REGISTRY)


def get_dataset(name: str, root: str | Path, *, split: str | None = None) -> Dataset:
    """Open the dataset layout `name` at `root`."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise SgeoError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}") from None
    return cls(root, split=split)


class _JsonSamplesDataset(Dataset):
    """A layout whose samples are one LLaVA-format JSON list; images are its `image` fields."""

    json_name: ClassVar[str]

    @cached_property
    def _records(self) -> list[dict]:
        path = self.default_json()
        return read_llava_samples(path, f"{self.name} annotation file")

    def default_json(self) -> Path:
        return self.root / self.json_name

    def annotation_files(self) -> list[Path]:
        return [self.default_json()]

    def images(self) -> list[ImageRef]:
        return _unique_refs(r["image"] for r in self._records if "image" in r)

    def samples(self) -> list[dict]:
        return [{**r, "id": str(r.get("id", i))} for i, r in enumerate(self._records)]


@register_dataset("coco")
class CocoCaptions(Dataset):
    """COCO captions: `annotations/captions_{split}.json`, images in `{split}/`, image_id `{split}/{file}`."""

    splits = ("train2017", "val2017")

    def annotation_files(self) -> list[Path]:
        return [self.root / "annotations" / f"captions_{self.split}.json"]

    @cached_property
    def _annotations(self) -> dict:
        (path,) = self.annotation_files()
        ann = _read_json(path, "coco annotation file")
        if not isinstance(ann, dict) or not isinstance(ann.get("images"), list):
            raise SgeoError(f"{path} has no 'images' list; is it a COCO captions file?")
        return ann

    def images(self) -> list[ImageRef]:
        return _unique_refs(f"{self.split}/{im['file_name']}" for im in self._annotations["images"])

    def samples(self) -> list[dict]:
        """One caption conversation per captioned image, with its first caption in file order."""
        first: dict[Any, str] = {}
        for a in self._annotations.get("annotations", []):
            first.setdefault(a["image_id"], a["caption"])
        out = []
        for im in sorted(self._annotations["images"], key=lambda im: im["file_name"]):
            if im["id"] in first:
                out.append(_caption_sample(str(im["id"]), f"{self.split}/{im['file_name']}", first[im["id"]]))
        return out


@register_dataset("llava-pretrain")
class LlavaPretrain(_JsonSamplesDataset):
    """LCS-558K: `blip_laion_cc_sbu_558k.json`, its `image` fields relative to `images/` (the image_root)."""

    json_name = "blip_laion_cc_sbu_558k.json"
    image_aspect_ratio = "crop"

    def __init__(self, root: str | Path, *, split: str | None = None) -> None:
        super().__init__(root, split=split)
        self.image_root = self.root / "images"


@register_dataset("llava-mix665k")
class LlavaMix665k(_JsonSamplesDataset):
    """LLaVA-1.5 stage-2 mix: `llava_v1_5_mix665k.json`, image paths relative to root (coco/, gqa/, ...)."""

    json_name = "llava_v1_5_mix665k.json"


@register_dataset("folder")
class ImageFolder(Dataset):
    """Every image file under root, recursively (by extension, case-insensitive); no samples."""

    def images(self) -> list[ImageRef]:
        ids = []
        # os.walk does not follow directory symlinks, so a link cycle cannot make the listing endless
        for dirpath, dirnames, filenames in os.walk(self.root):
            # skip hidden entries: macOS "._x.jpg" resource forks and .git objects are not images
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                    ids.append((Path(dirpath) / f).relative_to(self.root).as_posix())
        return _unique_refs(ids)


@register_dataset("synthetic")
class SyntheticSpatial(Dataset):
    """The layout `sgeo.synthetic` writes.

    split "train": images referenced by captions.json (stage 1) and spatial_qa.json (stage 2), relative to
    root; samples() are the stage-2 QA samples. split "eval": image_root is `eval/`, images and samples come
    from the benchmark `eval/bench.json`.
    """

    splits = ("train", "eval")
    stage_files: ClassVar[dict[int, str]] = {1: SYNTHETIC_CAPTIONS, 2: SYNTHETIC_QA}

    def __init__(self, root: str | Path, *, split: str | None = None) -> None:
        super().__init__(root, split=split)
        if self.split == "eval":
            self.image_root = self.root / SYNTHETIC_EVAL

    def annotation_files(self) -> list[Path]:
        if self.split == "eval":
            return [self.root / SYNTHETIC_EVAL / SYNTHETIC_BENCH]
        return [self.root / name for name in self.stage_files.values()]

    def stage_json(self, stage: int) -> Path:
        """The training JSON of stage 1 (captions) or stage 2 (spatial QA)."""
        if stage not in self.stage_files:
            raise SgeoError(
                f"no stage {stage!r} in the synthetic dataset; use 1 (captions) or 2 (spatial QA)"
            )
        return self.root / self.stage_files[stage]

    def _stage_records(self, stage: int) -> list[dict]:
        path = self.stage_json(stage)
        return read_llava_samples(path, f"synthetic stage-{stage} file")

    @cached_property
    def _bench(self) -> list[dict]:
        path = self.image_root / SYNTHETIC_BENCH
        items = _read_json(path, "synthetic benchmark file")
        if not isinstance(items, list) or not all(isinstance(i, dict) and "file_path" in i for i in items):
            raise SgeoError(f"{path} must be a JSON list of items with a 'file_path'; regenerate the dataset")
        return items

    def default_json(self) -> Path:
        return self.image_root / SYNTHETIC_BENCH if self.split == "eval" else self.stage_json(2)

    def images(self) -> list[ImageRef]:
        if self.split == "eval":
            return _unique_refs(item["file_path"] for item in self._bench)
        records = self._stage_records(1) + self._stage_records(2)
        return _unique_refs(r["image"] for r in records if "image" in r)

    def samples(self) -> list[dict]:
        if self.split == "eval":
            return [
                {"id": str(item["id"]), "image": item["file_path"], "conversations": item["conversations"]}
                for item in self._bench
            ]
        return self._stage_records(2)


def write_training_json(name: str, root: str | Path, out: str | Path, *, split: str | None = None) -> int:
    """Write a layout's LLaVA-format samples (e.g. COCO captions) as the training JSON `sgeo train` reads;
    image fields are the store's image ids. Returns the number of samples."""
    samples = get_dataset(name, root, split=split).samples()
    if not samples:
        raise SgeoError(f"dataset {name!r} at {root} has no training samples (only images); nothing to write")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, json.dumps(samples, indent=1, ensure_ascii=False) + "\n")
    return len(samples)
