"""Random scenes: 2-4 objects of distinct colours that fit the frame, each clearly visible."""

from __future__ import annotations

import math

import numpy as np

from .scene import COLOURS, FLOORS, SHAPES, Camera, Scene, SceneObject, bbox_2d, ground_distance


def _r2(v: float) -> float:
    return round(float(v), 2)


def _sample_object(rng: np.random.Generator, color: str) -> SceneObject:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    # Near and large enough to cover a few patches at the tiny preset's 112 px (8 x 8 patches): at 2.5-7 m
    # and 0.3-1.1 m an object covered 0.85 patches (median), too little for a random-init tower to show.
    x, z = _r2(rng.uniform(-1.3, 1.3)), _r2(rng.uniform(1.8, 4.0))
    if shape == "box":
        w, h, d = _r2(rng.uniform(0.45, 1.5)), _r2(rng.uniform(0.45, 1.65)), _r2(rng.uniform(0.45, 1.5))
    elif shape == "cylinder":
        w = d = _r2(rng.uniform(0.45, 1.35))
        h = _r2(rng.uniform(0.45, 1.65))
    else:
        w = h = d = _r2(rng.uniform(0.45, 1.5))
    return SceneObject(shape, color, x, z, w, h, d)


def _fits(obj: SceneObject, others: list[SceneObject], camera: Camera) -> bool:
    for o in others:
        if math.hypot(obj.x - o.x, obj.z - o.z) < obj.footprint_radius + o.footprint_radius + 0.25:
            return False
    u0, v0, u1, v1 = bbox_2d(camera, obj)
    m = 0.02 * camera.width
    return u0 >= m and v0 >= m and u1 <= camera.width - m and v1 <= camera.height - m


def _well_visible(objects: list[SceneObject], camera: Camera) -> bool:
    """No object may have more than 20% of its 2D box covered by a nearer object's box."""
    boxes = {o.name: bbox_2d(camera, o) for o in objects}
    for far in objects:
        fu0, fv0, fu1, fv1 = boxes[far.name]
        for near in objects:
            if ground_distance(near) >= ground_distance(far):
                continue
            nu0, nv0, nu1, nv1 = boxes[near.name]
            overlap = max(0.0, min(fu1, nu1) - max(fu0, nu0)) * max(0.0, min(fv1, nv1) - max(fv0, nv0))
            if overlap > 0.2 * (fu1 - fu0) * (fv1 - fv0):
                return False
    return True


OBJECTS_PER_SCENE = (2, 4)  # fewest and most objects in a scene


def sample_scene(
    rng: np.random.Generator, width: int, height: int, how_many: tuple[int, int] = OBJECTS_PER_SCENE
) -> Scene:
    """Draw a random scene of `how_many` (fewest, most) objects that fits the frame, each clearly visible."""
    while True:
        hfov = rng.uniform(54.0, 70.0)
        camera = Camera(
            width,
            height,
            focal=round(width / 2 / math.tan(math.radians(hfov / 2)), 2),
            elevation=_r2(rng.uniform(1.3, 1.8)),
            pitch_deg=round(float(rng.uniform(8.0, 16.0)), 1),
        )
        k = int(rng.integers(how_many[0], how_many[1] + 1))
        colours = [str(c) for c in rng.choice(list(COLOURS), size=k, replace=False)]
        objects: list[SceneObject] = []
        for colour in colours:
            for _ in range(60):
                obj = _sample_object(rng, colour)
                if _fits(obj, objects, camera):
                    objects.append(obj)
                    break
        if len(objects) < k or not _well_visible(objects, camera):
            continue
        light = np.array([rng.uniform(-0.8, 0.8), 1.0, rng.uniform(-0.9, -0.3)])
        light = tuple(round(float(c), 4) for c in light / np.linalg.norm(light))
        floor = list(FLOORS)[int(rng.integers(len(FLOORS)))]
        return Scene(camera, tuple(objects), floor, light)
