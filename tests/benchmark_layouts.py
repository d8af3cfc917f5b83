"""Stand-ins for the published benchmarks, small, in exactly their published layouts: the same file names,
columns, formats (parquet with the `datasets` Image struct {bytes, path} for embedded images, JSONL, folders)
and value styles as the real files, read from their dataset cards and their authors' / lmms-eval's code.

Each writer returns what `sgeo eval --data` takes for that benchmark; `STANDINS` maps every registered
benchmark to its writer, so a benchmark added to the registry without a stand-in fails
tests/test_benchmark_registry.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from benchmark_fixtures import write_spatialrgpt, write_spatialscore

# what `datasets` writes for an Image feature: a struct of the encoded file and its original path
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def encoded(colour: tuple[int, int, int], fmt: str = "JPEG", size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_hf_parquet(path: Path, rows: list[dict], schema: pa.Schema, features: dict) -> Path:
    """`rows` as a parquet file the way `datasets` pushes one: the schema, and its features in the
    "huggingface" metadata (image columns typed Image)."""
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    table = pa.Table.from_pylist(rows, schema=schema.with_metadata(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


# --- CV-Bench (nyu-visionx/CV-Bench: test_2d.parquet, test_3d.parquet; a row as its card and loaders show:
# {'idx': 0, 'type': '2D', 'task': 'Count', 'image': <JPEG>, 'question': 'How many organs are in the image?',
#  'choices': ['3', '2', '1', '0'], 'answer': '(C)', 'prompt': 'How many organs are in the image? Select from
#  the following choices.\n(A) 3\n(B) 2\n(C) 1\n(D) 0', 'filename': 'img/2D/count/ade20k_10.png',
#  'source': 'ADE20K', 'source_dataset': 'ADE20K Validation Set', 'source_filename': 'ADE_val_00000248.jpg',
#  'target_class': None, 'target_size': None, 'bbox': None})

CVBENCH_SCHEMA = pa.schema([
    ("idx", pa.int64()), ("type", pa.string()), ("task", pa.string()), ("image", IMAGE_TYPE),
    ("question", pa.string()), ("choices", pa.list_(pa.string())), ("answer", pa.string()),
    ("prompt", pa.string()), ("filename", pa.string()), ("source", pa.string()),
    ("source_dataset", pa.string()), ("source_filename", pa.string()), ("target_class", pa.string()),
    ("target_size", pa.int64()), ("bbox", pa.list_(pa.int64())),
])  # fmt: skip
CVBENCH_FEATURES = {
    name: ({"_type": "Image"} if name == "image" else {"dtype": "string", "_type": "Value"})
    for name in CVBENCH_SCHEMA.names
}


def _cv(idx, kind, task, question, choices, answer, filename, source, source_dataset, colour, **extra):
    letters = "ABCDEF"
    prompt = f"{question} Select from the following choices.\n" + "\n".join(
        f"({letters[k]}) {c}" for k, c in enumerate(choices)
    )
    fmt = "JPEG" if kind == "2D" else "PNG"
    return {
        "idx": idx, "type": kind, "task": task, "image": {"bytes": encoded(colour, fmt), "path": None},
        "question": question, "choices": choices, "answer": answer, "prompt": prompt, "filename": filename,
        "source": source, "source_dataset": source_dataset, "source_filename": f"src_{idx}.jpg",
        "target_class": extra.get("target_class"), "target_size": extra.get("target_size"),
        "bbox": extra.get("bbox"),
    }  # fmt: skip


CVBENCH_2D = [
    _cv(0, "2D", "Count", "How many organs are in the image?", ["3", "2", "1", "0"], "(C)",
        "img/2D/count/ade20k_10.png", "ADE20K", "ADE20K Validation Set", (200, 30, 30)),
    _cv(1, "2D", "Count", "How many pictures are in the image?", ["2", "0", "4", "1"], "(A)",
        "img/2D/count/ade20k_11.png", "ADE20K", "ADE20K Validation Set", (30, 200, 30)),
    _cv(2, "2D", "Relation", "Considering the relative positions of the car and the person in the image "
        "provided, where is the car located with respect to the person?", ["left", "right"], "(B)",
        "img/2D/relation/coco_5.png", "COCO", "COCO 2017 Validation Set", (30, 30, 200)),
    _cv(3, "2D", "Count", "How many cups are in the image?", ["1", "3", "2", "0"], "(B)",
        "img/2D/count/coco_7.png", "COCO", "COCO 2017 Validation Set", (90, 90, 30),
        target_class="cup", target_size=3, bbox=[4, 5, 20, 22]),
]  # fmt: skip
CVBENCH_3D = [
    _cv(1438, "3D", "Depth", "Which object is closer to the camera taking this photo, the lamp (highlighted by "
        "a red box) or the table (highlighted by a blue box)?", ["lamp", "table"], "(A)",
        "img/3D/depth/omni3d_sunrgbd_1.png", "Omni3D", "SUN-RGBD", (10, 120, 160)),
    _cv(1439, "3D", "Distance", "Estimate the real-world distances between objects in this image. Which object "
        "is closer to the chair (highlighted by a red box), the sofa (highlighted by a blue box) or the tv "
        "(highlighted by a green box)?", ["sofa", "tv"], "(B)",
        "img/3D/distance/omni3d_hypersim_2.png", "Omni3D", "Hypersim", (160, 120, 10)),
]  # fmt: skip


def write_cvbench(root: Path, rows_2d: list[dict] | None = None, rows_3d: list[dict] | None = None) -> Path:
    """The Hub repository's folder: test_2d.parquet and test_3d.parquet (images embedded)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("test_2d", rows_2d or CVBENCH_2D), ("test_3d", rows_3d or CVBENCH_3D)):
        write_hf_parquet(root / f"{name}.parquet", rows, CVBENCH_SCHEMA, CVBENCH_FEATURES)
    return root


def write_cvbench_jsonl(root: Path) -> Path:
    """The JSONL form: test_2d.jsonl / test_3d.jsonl (no image column) beside img/ holding each `filename`."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("test_2d", CVBENCH_2D), ("test_3d", CVBENCH_3D)):
        with open(root / f"{name}.jsonl", "w") as f:
            for row in rows:
                (root / row["filename"]).parent.mkdir(parents=True, exist_ok=True)
                (root / row["filename"]).write_bytes(row["image"]["bytes"])
                f.write(json.dumps({k: v for k, v in row.items() if k != "image"}) + "\n")
    return root


# --- BLINK (BLINK-Benchmark/BLINK: <Subtask>/val-00000-of-00001.parquet and test-00000-of-00001.parquet; columns
# as the authors' eval/test_benchmark.py and lmms-eval's tasks/blink/utils.py read them; idx "val_<Subtask>_<n>")

BLINK_SCHEMA = pa.schema([
    ("idx", pa.string()), ("question", pa.string()), ("sub_task", pa.string()), ("image_1", IMAGE_TYPE),
    ("image_2", IMAGE_TYPE), ("image_3", IMAGE_TYPE), ("image_4", IMAGE_TYPE), ("choices", pa.list_(pa.string())),
    ("answer", pa.string()), ("prompt", pa.string()), ("explanation", pa.string()),
])  # fmt: skip
BLINK_FEATURES = {
    name: ({"_type": "Image"} if name.startswith("image_") else {"dtype": "string", "_type": "Value"})
    for name in BLINK_SCHEMA.names
}


def _blink(task, n, question, choices, answer, images=1, split="val"):
    prompt = f"{question}\nSelect from the following choices.\n" + "\n".join(
        f"({'ABCDE'[k]}) {c}" for k, c in enumerate(choices)
    )
    row = {
        "idx": f"{split}_{task}_{n}", "question": question, "sub_task": task, "choices": choices,
        "answer": answer, "prompt": prompt, "explanation": "",
    }  # fmt: skip
    for k in range(1, 5):
        colour = (40 * k, 25 * n % 255, 90)
        row[f"image_{k}"] = (
            {"bytes": encoded(colour), "path": f"{row['idx']}_{k}.jpg"} if k <= images else None
        )
    return row


BLINK_ROWS = {
    "Relative_Depth": [
        _blink("Relative_Depth", 1, "Which point is closer to the camera?", ["A", "B"], "(A)"),
        _blink("Relative_Depth", 2, "Which point is closer to the camera?", ["A", "B"], "(B)"),
    ],
    "Spatial_Relation": [
        _blink("Spatial_Relation", 1, "Is the car beneath the cat?", ["yes", "no"], "(B)"),
    ],
    "Multi-view_Reasoning": [
        _blink("Multi-view_Reasoning", 1, "The images are frames from a video. The video is shooting a static "
               "scene. The camera is either moving clockwise (left) or counter-clockwise (right) around the "
               "object. The first image is from the beginning of the video and the second image is from the end. "
               "Is the camera moving left or right when shooting the video?", ["left", "right"], "(A)", images=2),
    ],
    "Object_Localization": [
        _blink("Object_Localization", 1, "A bounding box is an annotated rectangle surrounding an object. The "
               "edges of bounding boxes should touch the outermost pixels of the object that is being labeled. "
               "Given the two bounding boxes on the image, labeled by A and B, which bounding box more accurately "
               "localizes and encloses the dog?", ["Box A", "Box B"], "(B)"),
    ],
    "Counting": [
        _blink("Counting", 1, "How many blue floats are in the image?", ["0", "3", "2", "1"], "(C)"),
    ],
    # a subtask that is not spatial: in the repository, left out when the folder is given
    "Art_Style": [_blink("Art_Style", 1, "Which image shares the same style as the reference image?",
                         ["the second image", "the third image"], "(A)", images=3)],
}  # fmt: skip


def write_blink(root: Path) -> Path:
    """The Hub repository's folder: one folder per subtask with its val parquet, and the test parquet, whose
    answers are "hidden"."""
    for task, rows in BLINK_ROWS.items():
        write_hf_parquet(root / task / "val-00000-of-00001.parquet", rows, BLINK_SCHEMA, BLINK_FEATURES)
        hidden = [{**_blink(task, 1, r["question"], r["choices"], "hidden", split="test")} for r in rows[:1]]
        write_hf_parquet(root / task / "test-00000-of-00001.parquet", hidden, BLINK_SCHEMA, BLINK_FEATURES)
    return root


# --- POPE (github.com/AoiDragon/POPE output/coco/coco_pope_<category>.json, JSON lines, the files LLaVA's
# eval_pope.py --annotation-dir reads; images are COCO val2014 by file name)


def _pope_rows(category: str) -> list[dict]:
    objects = {
        "random": ["dining table", "tv"],
        "popular": ["person", "chair"],
        "adversarial": ["sandwich", "fork"],
    }
    rows, qid = [], 0
    for image_id in (548882, 8211):
        for name, label in zip(objects[category], ("yes", "no"), strict=True):
            article = "an" if name[0] in "aeiou" else "a"
            rows.append({"question_id": qid, "image": f"COCO_val2014_{image_id:012d}.jpg", "image_id": image_id,
                         "text": f"Is there {article} {name} in the image?", "label": label})  # fmt: skip
            qid += 1
    return rows


POPE_CATEGORIES = ("adversarial", "popular", "random")


def write_pope(root: Path) -> Path:
    """LLaVA's benchmark/eval/pope layout: coco/ with the three annotation files, val2014/ with the images.
    Returns the coco/ folder (pass root/"val2014" as --image-root)."""
    (root / "coco").mkdir(parents=True, exist_ok=True)
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    for category in POPE_CATEGORIES:
        rows = _pope_rows(category)
        (root / "coco" / f"coco_pope_{category}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for r in rows:
            (root / "val2014" / r["image"]).write_bytes(encoded((r["image_id"] % 255, 80, 120)))
    return root / "coco"


POPE_PARQUET_SCHEMA = pa.schema([
    ("id", pa.string()), ("question_id", pa.string()), ("question", pa.string()), ("answer", pa.string()),
    ("image_source", pa.string()), ("image", IMAGE_TYPE), ("category", pa.string()),
])  # fmt: skip


def write_pope_parquet(root: Path) -> Path:
    """lmms-lab/POPE's layout: data/test-0000N-of-00003.parquet, images embedded, the category a column."""
    rows = []
    for n, category in enumerate(POPE_CATEGORIES):
        for r in _pope_rows(category):
            rows.append({"id": str(len(rows)), "question_id": str(len(rows) + 1), "question": r["text"],
                         "answer": r["label"], "image_source": r["image"][:-4], "category": category,
                         "image": {"bytes": encoded((r["image_id"] % 255, 80, 40 * n)), "path": None}})  # fmt: skip
    features = {name: ({"_type": "Image"} if name == "image" else {"dtype": "string", "_type": "Value"})
                for name in POPE_PARQUET_SCHEMA.names}  # fmt: skip
    for k in range(3):
        write_hf_parquet(
            root / "data" / f"test-0000{k}-of-00003.parquet", rows[k::3], POPE_PARQUET_SCHEMA, features
        )
    return root


# --- EmbSpatial-Bench (FlagEval/EmbSpatial-Bench, split test: the columns lmms-eval's tasks/embspatial and
# VLMEvalKit read; answer is the index of the right option)

EMBSPATIAL_SCHEMA = pa.schema([
    ("question_id", pa.string()), ("image", IMAGE_TYPE), ("question", pa.string()),
    ("answer_options", pa.list_(pa.string())), ("answer", pa.int64()), ("relation", pa.string()),
    ("data_source", pa.string()), ("objects", pa.list_(pa.string())),
])  # fmt: skip
EMBSPATIAL_ROWS = [
    {"question_id": "mp3d_0", "question": "How are the sink and the mirror positioned in relation to each other "
     "in the image?", "answer_options": ["The sink is above the mirror.", "The sink is below the mirror.",
     "The sink is left of the mirror.", "The sink is right of the mirror."], "answer": 1, "relation": "below",
     "data_source": "mp3d", "objects": ["sink", "mirror"]},
    {"question_id": "scannet_7", "question": "Which object, in relation to your current position, holds the "
     "farthest placement in the image?", "answer_options": ["chair", "table", "door", "lamp"], "answer": 2,
     "relation": "far", "data_source": "scannet", "objects": ["chair", "table", "door", "lamp"]},
    {"question_id": "ai2thor_3", "question": "Among the objects, which one is located on the left?",
     "answer_options": ["Fridge", "Toaster", "Sink", "Bread"], "answer": 0, "relation": "left",
     "data_source": "ai2thor", "objects": ["Fridge", "Toaster"]},
]  # fmt: skip
for _k, _row in enumerate(EMBSPATIAL_ROWS):
    _row["image"] = {"bytes": encoded((60 * _k, 100, 200)), "path": None}


def write_embspatial(root: Path) -> Path:
    """The Hub repository's folder: data/test-00000-of-00001.parquet, images embedded."""
    features = {
        n: ({"_type": "Image"} if n == "image" else {"_type": "Value"}) for n in EMBSPATIAL_SCHEMA.names
    }
    write_hf_parquet(
        root / "data" / "test-00000-of-00001.parquet", EMBSPATIAL_ROWS, EMBSPATIAL_SCHEMA, features
    )
    return root


# --- MME (MME_Benchmark_release_version/: a folder per subtask; per image a .txt of two "question<TAB>answer"
# lines; artwork, celebrity, landmark, posters and scene keep images/ and questions_answers_YN/ apart; what
# LLaVA's convert_answer_to_mme.py `get_gt` reads)

MME_QUESTIONS = {
    "existence": {
        "000000006040.jpg": [("Is there a train in this image? Please answer yes or no.", "Yes"),
                             ("Is there a bed in this image? Please answer yes or no.", "No")],
        "000000044279.jpg": [("Is there a bus in this image? Please answer yes or no.", "No"),
                             ("Is there a sink in this image? Please answer yes or no.", "Yes")],
    },
    "artwork": {
        "10002.jpg": [("Does this artwork belong to the type of religious? Please answer yes or no.", "Yes"),
                      ("Does this artwork belong to the type of landscape? Please answer yes or no.", "No")],
    },
    "code_reasoning": {
        "0020.png": [("The image shows a python code. Will the number 3 appear in the output? Please answer yes or "
                      "no.", "Yes"),
                     ("The image shows a python code. Will the number 4 appear in the output? Please answer yes or "
                      "no.", "No")],
    },
}  # fmt: skip
MME_SPLIT = ("artwork", "celebrity", "landmark", "posters", "scene")


def write_mme(root: Path) -> Path:
    """MME_Benchmark_release_version/ with three subtasks in both of its folder forms."""
    release = root / "MME_Benchmark_release_version"
    for task, images in MME_QUESTIONS.items():
        folder = release / task
        image_dir, qa_dir = (
            (folder / "images", folder / "questions_answers_YN") if task in MME_SPLIT else (folder,) * 2
        )
        image_dir.mkdir(parents=True, exist_ok=True)
        qa_dir.mkdir(parents=True, exist_ok=True)
        for k, (name, qas) in enumerate(images.items()):
            fmt = "PNG" if name.endswith(".png") else "JPEG"
            (image_dir / name).write_bytes(encoded((20 * k, 160, 40), fmt))
            (qa_dir / (Path(name).stem + ".txt")).write_text("".join(f"{q}\t{a}\n" for q, a in qas))
    return release


# --- MM-Vet (mm-vet.zip: mm-vet/mm-vet.json keyed "v1_<n>", images/ beside it)

MMVET_ITEMS = {
    "v1_0": {"imagename": "v1_0.png", "capability": ["ocr", "math"],
             "question": "What is x in the equation?", "answer": "-1<AND>-5"},
    "v1_1": {"imagename": "v1_1.jpg", "capability": ["rec", "spat"],
             "question": "Which animal is on the left of the picture?", "answer": "cat<OR>kitten"},
    "v1_2": {"imagename": "v1_2.jpg", "capability": ["rec", "know", "gen"],
             "question": "Can you explain this meme?", "answer": "It pokes fun at misleading country names."},
}  # fmt: skip


def write_mmvet(root: Path) -> Path:
    """The unzipped mm-vet/ folder."""
    folder = root / "mm-vet"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for k, row in enumerate(MMVET_ITEMS.values()):
        fmt = "PNG" if row["imagename"].endswith(".png") else "JPEG"
        (folder / "images" / row["imagename"]).write_bytes(encoded((90, 30 * k, 60), fmt))
    (folder / "mm-vet.json").write_text(json.dumps(MMVET_ITEMS, indent=4))
    return folder


# --- 3DSRBench (lmms-eval's tasks/3dsrbench: configurations 3dsr and 3dsr_circular of the authors' data in
# VLMEvalKit's format; index, question, A-D with "nan" for an empty option, answer letter, category, image, qid)

THREEDSR_SCHEMA = pa.schema([
    ("index", pa.int64()), ("qid", pa.string()), ("question", pa.string()), ("A", pa.string()),
    ("B", pa.string()), ("C", pa.string()), ("D", pa.string()), ("answer", pa.string()),
    ("category", pa.string()), ("image", IMAGE_TYPE),
])  # fmt: skip


def _3dsr(index, qid, question, options, answer, category):
    padded = [*options, "nan", "nan"][:4] if len(options) < 4 else options
    return {"index": index, "qid": qid, "question": question, **dict(zip("ABCD", padded, strict=True)),
            "answer": answer, "category": category,
            "image": {"bytes": encoded((index * 30 % 255, 90, 150)), "path": None}}  # fmt: skip


# the circular file: a question, its circular variant (options rotated), its flipped version and that one's variant
THREEDSR_ROWS = [
    _3dsr(0, "VIN6MS3J", "Which object is higher in the 3D world space, the lamp or the table?",
          ["lamp", "table"], "A", "height_higher"),
    _3dsr(1, "VIN6MS3J-1", "Which object is higher in the 3D world space, the lamp or the table?",
          ["table", "lamp"], "B", "height_higher"),
    _3dsr(2, "VIN6MS3J-flip", "Which object is lower in the 3D world space, the lamp or the table?",
          ["lamp", "table"], "B", "height_higher"),
    _3dsr(3, "VIN6MS3J-flip-1", "Which object is lower in the 3D world space, the lamp or the table?",
          ["table", "lamp"], "A", "height_higher"),
    _3dsr(4, "K2P0QX7A", "Consider the real-world 3D orientations of the objects. Is the car facing toward the "
          "camera or facing away?", ["facing toward", "facing away"], "A", "orientation_viewpoint"),
    _3dsr(5, "K2P0QX7A-1", "Consider the real-world 3D orientations of the objects. Is the car facing toward the "
          "camera or facing away?", ["facing away", "facing toward"], "B", "orientation_viewpoint"),
]  # fmt: skip


def write_threedsr(root: Path) -> Path:
    """lmms-eval's dataset folder: 3dsr_circular/test-00000-of-00001.parquet, images embedded."""
    features = {
        n: ({"_type": "Image"} if n == "image" else {"_type": "Value"}) for n in THREEDSR_SCHEMA.names
    }
    write_hf_parquet(
        root / "3dsr_circular" / "test-00000-of-00001.parquet", THREEDSR_ROWS, THREEDSR_SCHEMA, features
    )
    return root


# --- 3DSRBench as its authors ship it (ccvl/3DSRBench on the Hub): 3dsrbench_v1_vlmevalkit_circular.tsv, VLMEvalKit's
# TSV as pandas writes it (tab-separated, a header, an absent option an empty cell), columns index, qid, question,
# A, B, C, D, answer, category, image (base64 JPEG), image_source, image_url

THREEDSR_TSV_COLUMNS = ("index", "qid", "question", "A", "B", "C", "D", "answer", "category", "image",
                        "image_source", "image_url")  # fmt: skip


def write_threedsr_tsv(root: Path, rows: list[dict] | None = None) -> Path:
    """The downloaded dataset folder with its circular TSV (the same questions as the lmms-eval stand-in)."""
    import base64
    import csv

    root.mkdir(parents=True, exist_ok=True)
    with (root / "3dsrbench_v1_vlmevalkit_circular.tsv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(THREEDSR_TSV_COLUMNS)
        for row in rows if rows is not None else THREEDSR_ROWS:
            cells = {**row, "image": base64.b64encode(row["image"]["bytes"]).decode(), "image_source": "MS-COCO",
                     "image_url": f"http://images.cocodataset.org/train2017/{row['index']:012d}.jpg"}  # fmt: skip
            writer.writerow(["" if cells[c] in (None, "nan") else cells[c] for c in THREEDSR_TSV_COLUMNS])
    return root


STANDINS = {
    "spatialrgpt": write_spatialrgpt,
    "spatialscore": write_spatialscore,
    "cv-bench": write_cvbench,
    "blink": write_blink,
    "3dsrbench": write_threedsr,
    "embspatial": write_embspatial,
    "pope": write_pope_parquet,
    "mme": write_mme,
    "mm-vet": write_mmvet,
}


def write_synthetic(root: Path) -> Path:
    """What `sgeo data synthetic` writes for the bench: eval/bench.json (SpatialRGPT-Bench format) and its
    images; `--data` is the dataset folder."""
    write_spatialrgpt(root / "eval")
    return root


STANDINS["synthetic"] = write_synthetic


# --- a judge: an OpenAI-compatible chat endpoint on loopback whose replies a test scripts


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "stub-judge", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        content = self.server.reply(body)
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


@contextlib.contextmanager
def scripted_judge(reply: Callable[[dict], str]) -> Iterator[ThreadingHTTPServer]:
    """A judge endpoint answering each chat request with `reply(body)`; yields the server, whose `requests`
    are the bodies it got and whose `url` is its API base."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests, server.reply = [], reply
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
