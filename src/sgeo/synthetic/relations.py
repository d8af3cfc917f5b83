"""Ground-truth relations between two objects, judged in 3D, and whether each is clear enough to ask.

Distances join object centres; left/right compare x (and must agree with the image); front/behind compare
distance to the camera (and must agree with z); above/below compare the heights of the centres;
bigger/smaller compare bounding-box volumes. Pairs whose relation is too close to call are never asked
about.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .scene import Scene, SceneObject, camera_distance


def centre_distance(a: SceneObject, b: SceneObject) -> float:
    return float(np.linalg.norm(a.centre - b.centre))


def horizontal_distance(a: SceneObject, b: SceneObject) -> float:
    return math.hypot(a.x - b.x, a.z - b.z)


def vertical_distance(a: SceneObject, b: SceneObject) -> float:
    return abs(a.height - b.height) / 2


def clock_angle(a: SceneObject, b: SceneObject) -> float:
    """Degrees clockwise from straight ahead (away from the camera) to b, seen from a."""
    return math.degrees(math.atan2(b.x - a.x, b.z - a.z)) % 360.0


def clock_hour(a: SceneObject, b: SceneObject) -> int:
    return round(clock_angle(a, b) / 30.0) % 12 or 12


def _sign(diff: float, margin: float) -> int:
    return 0 if abs(diff) < margin else (1 if diff > 0 else -1)


def _ratio_sign(va: float, vb: float, ratio: float) -> int:
    return 1 if va >= vb * ratio else (-1 if vb >= va * ratio else 0)


def _cmp_left(scene: Scene, a: SceneObject, b: SceneObject) -> int:
    """+1 if a is clearly left of b, both in 3D and in the picture."""
    s3d = _sign(b.x - a.x, 0.3)
    (ua, _), (ub, _) = scene.camera.project(np.stack([a.centre, b.centre]))[0]
    return s3d if s3d == _sign(ub - ua, 0.06 * scene.camera.width) else 0


def _cmp_behind(scene: Scene, a: SceneObject, b: SceneObject) -> int:
    s = _sign(camera_distance(scene.camera, a) - camera_distance(scene.camera, b), 0.3)
    return s if s == _sign(a.z - b.z, 0.15) else 0


# relation -> +1 if a has "more" of it than b, -1 if less, 0 if too close to call
RELATIONS: dict[str, Callable[[Scene, SceneObject, SceneObject], int]] = {
    "left": _cmp_left,
    "behind": _cmp_behind,
    "above": lambda s, a, b: _sign(a.height - b.height, 0.2),  # centres differ by >= 0.1 m
    "tall": lambda s, a, b: _ratio_sign(a.height, b.height, 1.15) if abs(a.height - b.height) >= 0.1 else 0,
    "wide": lambda s, a, b: _ratio_sign(a.width, b.width, 1.15) if abs(a.width - b.width) >= 0.1 else 0,
    "big": lambda s, a, b: _ratio_sign(a.volume, b.volume, 1.3),
}
