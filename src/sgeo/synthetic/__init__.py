"""Synthetic spatial dataset: rendered scenes with exact 3D ground truth, captions, spatial QA, a benchmark.

Each scene puts 2-4 boxes, cylinders and spheres (one colour each) on a ground plane in front of a pinhole
camera and renders them with PIL, far objects first, with Lambert shading, shadows and a floor grid, so
that perspective cues are real: farther objects are smaller and higher in the image.

- `scene`: the camera, the objects and the world coordinates (metres; x right, y up, z forward).
- `sampling`: random scenes that fit the frame with every object clearly visible.
- `render`: drawing a scene with PIL.
- `relations`: ground-truth relations between two objects, judged in 3D.
- `questions`: question categories, questions and answers, captions.
- `writer`: `generate_synthetic`, which writes the dataset to a folder.
"""

from .questions import (
    BENCH_CATEGORIES,
    CHOICES,
    PREDICATES,
    QUANTITATIVE,
    TRAIN_CATEGORIES,
    caption,
    category_type,
    make_question,
)
from .relations import centre_distance, clock_angle, clock_hour, horizontal_distance, vertical_distance
from .render import SKY, render_scene
from .sampling import sample_scene
from .scene import COLOURS, FLOORS, SHAPES, Camera, Scene, SceneObject, bbox_2d, camera_distance
from .writer import BENCH_ITEMS_PER_IMAGE, GENERATOR_VERSION, generate_synthetic

__all__ = [
    "BENCH_CATEGORIES",
    "BENCH_ITEMS_PER_IMAGE",
    "CHOICES",
    "COLOURS",
    "FLOORS",
    "GENERATOR_VERSION",
    "PREDICATES",
    "QUANTITATIVE",
    "SHAPES",
    "SKY",
    "TRAIN_CATEGORIES",
    "Camera",
    "Scene",
    "SceneObject",
    "bbox_2d",
    "camera_distance",
    "caption",
    "category_type",
    "centre_distance",
    "clock_angle",
    "clock_hour",
    "generate_synthetic",
    "horizontal_distance",
    "make_question",
    "render_scene",
    "sample_scene",
    "vertical_distance",
]
