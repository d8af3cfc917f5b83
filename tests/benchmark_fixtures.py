"""Benchmark files in their authors' own formats, small: SpatialScore rows modelled on SpatialScore-Hard.json
(every question_type, ten sources, lower-case options, answers "B" / "(D)" / "(a)", 1 to 8 images) and a
SpatialRGPT-Bench row per report group, for the tests of loading, scoring, protocols and eval."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def _row(index, category, subcategory, qtype, source, question, answer, images, modality=None):
    modality = modality or ("single-image" if len(images) == 1 else "multi-images")
    return {
        "index": index,
        "category": category,
        "subcategory": subcategory,
        "question_type": qtype,
        "input_modality": modality,
        "question": question,
        "answer": answer,
        "img_paths": images,
        "source": source,
        "index_origin": f"orig-{index}",
        "category_origin": "unknown",
    }


def _frames(scene: str, n: int) -> list[str]:
    return [f"./dataset/VSI-Bench/8_frames/scannet/{scene}/frame_{k:02d}.jpg" for k in range(n)]


HOMOGRAPHY = (
    "Your task is computing the 3x3 homography matrix that maps the coordinates of points in one image to "
    "their corresponding coordinates in another image. (Two images of the same planar.)\n"
    "Select from the following choices.\n"
    "A: 0.29534 0.035751 -56.21\n-0.35718 0.5432 233.53\n-0.00064211 -1.1093e-05 0.97783\n\n"
    "B: 14.984 -1.5209 -1987.5\n0.59203 13.878 -3896.8\n0.0072047 0.0038814 0.92614\n\n"
    "C: 0.67783 0.002447 123\n-0.00051063 0.68091 83.563\n-2.5166e-06 5.6486e-06 1\n\n"
    "D: 0.4849 -0.15095 280.72\n-0.18568 0.38797 170.57\n-4.9965e-05 -0.00024428 0.99985\n\n"
    "Please compute the 3x3 homography matrix between these two images."
)

# (row, a prediction, the credit SpatialScore's rules give it: worked out by hand in tests/test_spatialscore.py)
SPATIALSCORE_ROWS = [
    _row(258, "Others", "Miscellaneous", "multi-choice", "MMVP",
         "In the picture, are the elderly people moving to the left or to the right?\n(a) Left (b) Right",
         "(a)", ["./dataset/MMVP/MMVP/259.jpg"]),
    _row(304, "Object Properties", "Size", "multi-choice", "3DSRBench",
         "Consider the real-world 3D locations of the objects. Which object has a higher location?\n"
         "(A) train\n(B) street lights in the back", "B",
         ["./dataset/3DSRBench/coco_images/train2017/000000448871.jpg"]),
    _row(12, "Counting", "Object Counting", "multi-choice", "cvbench",
         "How many curtains are in the image? Select from the following choices.\n(A) 2\n(B) 0\n(C) 3\n(D) 1",
         "(D)", ["./dataset/CV-Bench/img/2D/count/ade20k_102.png"]),
    _row(501, "Point and Object Tracking", "Point Correspondence", "multi-choice", "MMIU",
         "We change the camera position or lighting and shoot the second image. Which point on the second "
         "image corresponds to the point in the first image? Select from the following options.\n"
         "A: Point A\nB: Point B\nC: Point C\nD: Point D\n\nWhich point is corresponding to the reference point?",
         "A", ["./dataset/MMIU-Benchmark/./corr/scannet_0_0.jpg", "./dataset/MMIU-Benchmark/./corr/scannet_0_1.jpg"]),
    _row(700, "3D Positional Relation", "Orientation", "multi-choice", "VSI-Bench_8",
         "If I am standing by the tv and facing the sofa, is the chair to my front-left, front-right, "
         "back-left, or back-right?\nThe directions refer to the quadrants of a Cartesian plane (if I am "
         "standing at the origin and facing along the positive y-axis). Options: A. back-left, B. front-right, "
         "C. front-left, D. back-right", "B", _frames("42445026", 8), "video"),
    _row(701, "Counting", "Object Counting", "open-ended", "VSI-Bench_8",
         "How many ceiling light(s) are in this room?", "4", _frames("c50d2d1d42", 8), "video"),
    _row(900, "Depth and Distance", "Absolute", "open-ended", "VGBench",
         "How deep is the area defined by the bounding box coordinates (588, 433, 713, 529), measured in "
         "meters?\nYou need to calculate the depth for the area specified by the bounding box (588, 433, 713, "
         "529). Give the mean depth in meters.", "1.72 meters", ["./dataset/VGBench/depth_vqa/depth_vqa_0137.jpg"]),
    _row(901, "Depth and Distance", "Absolute", "judgment", "VGBench",
         "Does the area within the bounding box coordinates (804, 583, 921, 668) have a depth of around 3.2 "
         "meters?\nYour objective is to verify whether the given depth measurement for the designated area is "
         "accurate. Respond with Yes or No.", "Yes", ["./dataset/VGBench/depth_vqa/depth_vqa_0240.jpg"]),
    _row(1100, "3D Positional Relation", "Orientation", "judgment", "SpatialSense",
         "Is the bowl next to the table? Answer with Yes or No.", "No",
         ["./dataset/SpatialSense/images/nyu/nyu_dining_room_0003.png"]),
    _row(1200, "Others", "Miscellaneous", "multi-choice", "RealWorldQA",
         "What is the weather?\n\nA. Sunny\nB. Rainy\nC. Cloudy\n"
         "Please answer directly with only the letter of the correct option and nothing else.", "C",
         ["./dataset/realworldqa/images/212.jpg"]),
    _row(1201, "Others", "Miscellaneous", "open-ended", "RealWorldQA",
         "How many cars are white in this picture?\nPlease answer directly with a single word or number.", "2",
         ["./dataset/realworldqa/images/224.jpg"]),
    _row(40, "Counting", "Object Counting", "multi-choice", "BLINK",
         "How many fingers are in front of the bathtub?\nSelect from the following choices.\n"
         "(A) 4\n(B) 3\n(C) 2\n(D) 5", "(B)", ["./dataset/BLINK/Counting/images/val_Counting_18_17_1.jpg"]),
    _row(950, "Camera and Image Transformation", "2D Transformation", "multi-choice", "VGBench", HOMOGRAPHY, "D",
         ["./dataset/VGBench/homography/h_0_a.png", "./dataset/VGBench/homography/h_0_b.png"]),
    _row(1300, "3D Positional Relation", "Orientation", "judgment", "VSR-ZeroShot",
         "Is this statement true based on the image: 'The parking meter is behind the car.'? Answer with Yes "
         "or No.", "No", ["./dataset/vsr_zeroshot/COCO2017/train2017/000000550019.jpg"]),
]  # fmt: skip

# one prediction per row above, in order, and the credit SpatialScore's rules give it
SPATIALSCORE_PREDS = [
    "(a) Left",  # extract_option: "(a) " -> A; gt "(a)" -> A
    "The answer is (A).",  # "answer is (A" -> A; gt B
    "D",  # D; gt "(D)" -> D
    "B: Point B",  # the lone "B" at the end -> B; gt A
    "b",  # ^[A-Fa-f]$ -> B; gt B
    "5",  # VSI-Bench count: MRA(5, 4): error 0.25 <= 1 - c for c in 0.50..0.75 -> 6 of 10 thresholds
    "\\scalar{2.924} \\distance_unit{meters}",  # 292.4 cm vs 172 cm: ratio 1.7 < 2
    "No, that is not right.",  # yes-words first: \bright\b -> "Yes"; gt Yes
    "No.",  # \bno\b -> "No"; gt No
    "A cloudy sky.",  # the article: (?:^|\s)A\s -> A; gt C
    "Two",  # RealWorldQA open-ended: exact match only; gt "2"
    "I think (B)",  # " (B)" -> B; gt "(B)" -> B
    "C",  # gt D
    "yes",  # "Yes"; gt No
]
SPATIALSCORE_CREDITS = [1.0, 0.0, 1.0, 0.0, 1.0, 0.6, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def write_spatialscore(root: Path, rows: list[dict] | None = None, name: str = "SpatialScore.json") -> Path:
    """`rows` (default: SPATIALSCORE_ROWS) as root/dataset/<name>, and every image they name under root, as
    SpatialScore's repository lays them out (paths "./dataset/..." from the folder holding dataset/)."""
    rows = SPATIALSCORE_ROWS if rows is None else rows
    for k, row in enumerate(rows):
        for j, rel in enumerate(row["img_paths"]):
            path = root / rel
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                size = (
                    (2, 2) if (k, j) == (0, 0) else (40 + 8 * (j % 3), 32)
                )  # a tiny one: SpatialScore upscales it
                Image.new("RGB", size, (30 * (k % 8), 20 * (j % 12), 120)).save(path)
    (root / "dataset").mkdir(parents=True, exist_ok=True)
    path = root / "dataset" / name
    path.write_text(json.dumps(rows, indent=2))
    return path


def _rgpt(qid, qtype, category, human, gt, text_q):
    return {
        "id": qid,
        "file_path": "images/scene.png",
        "text_q": text_q,
        "qa_info": {"type": qtype, "category": category},
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gt}],
    }


# one item per hint the reference gives: direction, quantitative (distance), qualitative (predicate, choice)
SPATIALRGPT_ROWS = [
    _rgpt("d0", "quantitative", "direction", "<image>\nIf you are at the red chair, where will you find the lamp?",
          "The lamp is at the 2 o'clock direction.", "If you are at Region [0], where will you find Region [1]?"),
    _rgpt("q0", "quantitative", "distance_data", "<image>\nHow far is the red chair from the lamp?",
          "They are 1.5 meters apart.", "How far is Region [0] from Region [1]?"),
    _rgpt("w0", "quantitative", "width_data", "<image>\nHow wide is the table?",
          "The table is 80 centimeters wide.", "How wide is Region [0]?"),
    _rgpt("l0", "qualitative", "left_predicate", "<image>\nIs the red chair to the left of the lamp?",
          "Yes, the red chair is to the left of the lamp.", "Is Region [0] to the left of Region [1]?"),
    _rgpt("t0", "qualitative", "tall_choice", "<image>\nWhich is taller, the lamp or the red chair?",
          "The lamp is taller.", "Which is taller, Region [0] or Region [1]?"),
]  # fmt: skip


def write_spatialrgpt(root: Path) -> Path:
    """SPATIALRGPT_ROWS as root/bench.json with their image."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 36), (90, 140, 60)).save(root / "images" / "scene.png")
    path = root / "bench.json"
    path.write_text(json.dumps(SPATIALRGPT_ROWS))
    return path
