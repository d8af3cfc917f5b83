"""Synthetic spatial dataset: rendered scenes with exact 3D ground truth, captions, spatial QA, a benchmark.

Each scene puts 2-4 boxes, cylinders and spheres (one colour each) on a ground plane in front of a pinhole
camera and renders them with PIL, far objects first, with Lambert shading, shadows and a floor grid, so
that perspective cues are real: farther objects are smaller and higher in the image.

World coordinates are metres: x to the right, y up, z forward, origin on the ground below the camera;
the camera has no yaw or roll, only a downward pitch. Relations are judged in 3D: distances join object
centres; left/right compare x (and must agree with the image); front/behind compare distance to the
camera (and must agree with z); above/below compare the heights of the centres; bigger/smaller compare
bounding-box volumes. Pairs whose relation is too close to call are never asked about.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sgeo.errors import SgeoError

GENERATOR_VERSION = 1
CAPTION_PROMPT = "Describe the image briefly."

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 45, 40),
    "green": (45, 160, 70),
    "blue": (45, 85, 210),
    "yellow": (235, 200, 40),
    "purple": (135, 65, 175),
    "orange": (240, 130, 30),
    "cyan": (40, 185, 200),
    "pink": (240, 125, 175),
    "brown": (125, 80, 45),
}
FLOORS: dict[str, tuple[int, int, int]] = {
    "gray": (150, 150, 150),
    "beige": (205, 195, 170),
    "slate": (100, 108, 120),
    "sand": (190, 172, 135),
}
SKY = (190, 210, 235)
SHAPES = ("box", "cylinder", "sphere")

QUANTITATIVE = (
    "distance_data",
    "height_data",
    "width_data",
    "vertical_distance_data",
    "horizontal_distance_data",
    "direction",
)
PREDICATES = (
    "left_predicate",
    "right_predicate",
    "above_predicate",
    "below_predicate",
    "behind_predicate",
    "front_predicate",
    "tall_predicate",
    "short_predicate",
    "wide_predicate",
    "thin_predicate",
    "big_predicate",
    "small_predicate",
)
CHOICES = (
    "tall_choice",
    "short_choice",
    "wide_choice",
    "thin_choice",
    "big_choice",
    "small_choice",
    "left_choice",
    "right_choice",
    "above_choice",
    "below_choice",
)
BENCH_CATEGORIES = QUANTITATIVE + PREDICATES + CHOICES
TRAIN_CATEGORIES = BENCH_CATEGORIES + ("front_choice", "behind_choice", "count")
BENCH_ITEMS_PER_IMAGE = 4


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at (0, elevation, 0) looking along +z, pitched down by pitch_deg."""

    width: int
    height: int
    focal: float  # pixels
    elevation: float  # metres above the ground
    pitch_deg: float

    @property
    def position(self) -> np.ndarray:
        return np.array([0.0, self.elevation, 0.0])

    def _axes(self) -> np.ndarray:
        t = math.radians(self.pitch_deg)
        # rows: right, up, forward
        return np.array([[1.0, 0.0, 0.0], [0.0, math.cos(t), math.sin(t)], [0.0, -math.sin(t), math.cos(t)]])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [N, 3] -> pixel coordinates [N, 2] (u right, v down) and depth along the view [N]."""
        cam = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.position) @ self._axes().T  # [N, 3]
        depth = cam[:, 2]
        u = self.width / 2 + self.focal * cam[:, 0] / depth
        v = self.height / 2 - self.focal * cam[:, 1] / depth
        return np.stack([u, v], axis=1), depth

    def rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """World directions (not normalised) through pixel coordinates u, v: [..., 3]."""
        cam = np.stack(
            [(u - self.width / 2) / self.focal, (self.height / 2 - v) / self.focal, np.ones_like(u)], -1
        )
        return cam @ self._axes()

    def horizon_v(self) -> float:
        return self.height / 2 - self.focal * math.tan(math.radians(self.pitch_deg))

    def scaled(self, s: int) -> Camera:
        return Camera(self.width * s, self.height * s, self.focal * s, self.elevation, self.pitch_deg)

    def to_json(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "focal_px": self.focal,
            "elevation_m": self.elevation,
            "pitch_deg": self.pitch_deg,
        }


@dataclass(frozen=True)
class SceneObject:
    """An object resting on the ground; (x, z) is the centre of its footprint; sizes are extents in metres."""

    shape: str
    color: str
    x: float
    z: float
    width: float  # along x
    height: float  # along y
    depth: float  # along z

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.x, self.height / 2, self.z])

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.width, self.depth) / 2 if self.shape == "box" else self.width / 2

    @property
    def volume(self) -> float:
        return self.width * self.height * self.depth

    def surface_points(self) -> np.ndarray:
        """Points whose projection spans the object's silhouette: [N, 3]."""
        if self.shape == "box":
            xs = (self.x - self.width / 2, self.x + self.width / 2)
            zs = (self.z - self.depth / 2, self.z + self.depth / 2)
            ys = (0.0, self.height)
            return np.array([[x, y, z] for x in xs for y in ys for z in zs])
        if self.shape == "cylinder":
            ring = _circle(self.x, self.z, self.width / 2, 48)
            return np.concatenate([ring, ring + [0.0, self.height, 0.0]])
        return self.centre + _unit_sphere(256) * (self.width / 2)


@dataclass(frozen=True)
class Scene:
    camera: Camera
    objects: tuple[SceneObject, ...]
    floor: str
    light: tuple[float, float, float]  # unit vector towards the light


def _circle(x: float, z: float, r: float, n: int, y: float = 0.0) -> np.ndarray:
    a = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([x + r * np.cos(a), np.full(n, y), z + r * np.sin(a)], axis=1)


def _unit_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi, theta = np.arccos(1 - 2 * i / n), math.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.cos(phi), np.sin(theta) * np.sin(phi)], axis=1)


def bbox_2d(camera: Camera, obj: SceneObject) -> tuple[float, float, float, float]:
    uv, _ = camera.project(obj.surface_points())
    return float(uv[:, 0].min()), float(uv[:, 1].min()), float(uv[:, 0].max()), float(uv[:, 1].max())


def camera_distance(camera: Camera, obj: SceneObject) -> float:
    return float(np.linalg.norm(obj.centre - camera.position))


# --- scene sampling -------------------------------------------------------------------------------------


def _r2(v: float) -> float:
    return round(float(v), 2)


def _sample_object(rng: np.random.Generator, color: str) -> SceneObject:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    x, z = _r2(rng.uniform(-2.2, 2.2)), _r2(rng.uniform(2.5, 7.0))
    if shape == "box":
        w, h, d = _r2(rng.uniform(0.3, 1.0)), _r2(rng.uniform(0.3, 1.1)), _r2(rng.uniform(0.3, 1.0))
    elif shape == "cylinder":
        w = d = _r2(rng.uniform(0.3, 0.9))
        h = _r2(rng.uniform(0.3, 1.1))
    else:
        w = h = d = _r2(rng.uniform(0.3, 1.0))
    return SceneObject(shape, color, x, z, w, h, d)


def _fits(obj: SceneObject, others: list[SceneObject], camera: Camera) -> bool:
    for o in others:
        if math.hypot(obj.x - o.x, obj.z - o.z) < obj.footprint_radius + o.footprint_radius + 0.25:
            return False
    u0, v0, u1, v1 = bbox_2d(camera, obj)
    m = 0.02 * camera.width
    return u0 >= m and v0 >= m and u1 <= camera.width - m and v1 <= camera.height - m


def _ground_distance(obj: SceneObject) -> float:
    return math.hypot(obj.x, obj.z)


def _well_visible(objects: list[SceneObject], camera: Camera) -> bool:
    """No object may have more than 20% of its 2D box covered by a nearer object's box."""
    boxes = {o.name: bbox_2d(camera, o) for o in objects}
    for far in objects:
        fu0, fv0, fu1, fv1 = boxes[far.name]
        for near in objects:
            if _ground_distance(near) >= _ground_distance(far):
                continue
            nu0, nv0, nu1, nv1 = boxes[near.name]
            overlap = max(0.0, min(fu1, nu1) - max(fu0, nu0)) * max(0.0, min(fv1, nv1) - max(fv0, nv0))
            if overlap > 0.2 * (fu1 - fu0) * (fv1 - fv0):
                return False
    return True


def sample_scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    """Draw a random scene that fits the frame with every object clearly visible."""
    while True:
        hfov = rng.uniform(54.0, 70.0)
        camera = Camera(
            width,
            height,
            focal=round(width / 2 / math.tan(math.radians(hfov / 2)), 2),
            elevation=_r2(rng.uniform(1.3, 1.8)),
            pitch_deg=round(float(rng.uniform(8.0, 16.0)), 1),
        )
        k = int(rng.integers(2, 5))
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


# --- rendering ------------------------------------------------------------------------------------------


def _shade(rgb: tuple[int, int, int], normal, light, k_min: float = 0.38) -> tuple[int, int, int]:
    k = k_min + (1 - k_min) * max(0.0, float(np.dot(normal, light)))
    return tuple(min(255, round(c * k)) for c in rgb)


def _scaled_rgb(rgb: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(min(255, round(c * k)) for c in rgb)


def _poly(camera: Camera, points: np.ndarray) -> list[tuple[float, float]]:
    uv, _ = camera.project(points)
    return [(float(u), float(v)) for u, v in uv]


def _draw_floor(draw: ImageDraw.ImageDraw, camera: Camera, floor_rgb: tuple[int, int, int]) -> None:
    hv = int(round(camera.horizon_v()))
    draw.rectangle([0, max(hv, 0), camera.width, camera.height], fill=floor_rgb)
    line = _scaled_rgb(floor_rgb, 0.86)
    for z in range(1, 13):
        draw.line(_poly(camera, np.array([[-40.0, 0, z], [40.0, 0, z]])), fill=line, width=1)
    for x in range(-12, 13):
        draw.line(_poly(camera, np.array([[x, 0, 0.5], [x, 0, 25.0]])), fill=line, width=1)


def _draw_shadow(draw, camera: Camera, obj: SceneObject, light, floor_rgb) -> None:
    away = -np.array([light[0], 0.0, light[2]])
    shift = away / (np.linalg.norm(away) + 1e-9) * min(0.25, 0.2 * obj.height)
    if obj.shape == "box":
        hw, hd = obj.width / 2 + 0.03, obj.depth / 2 + 0.03
        pts = np.array(
            [
                [obj.x - hw, 0, obj.z - hd],
                [obj.x + hw, 0, obj.z - hd],
                [obj.x + hw, 0, obj.z + hd],
                [obj.x - hw, 0, obj.z + hd],
            ]
        )
    else:
        pts = _circle(obj.x, obj.z, obj.width / 2 * 1.05, 32)
    draw.polygon(_poly(camera, pts + shift), fill=_scaled_rgb(floor_rgb, 0.62))


def _draw_box(img, draw, camera: Camera, obj: SceneObject, light) -> None:
    x0, x1 = obj.x - obj.width / 2, obj.x + obj.width / 2
    z0, z1 = obj.z - obj.depth / 2, obj.z + obj.depth / 2
    h = obj.height
    faces = [
        ((0, 0, -1), [[x0, 0, z0], [x1, 0, z0], [x1, h, z0], [x0, h, z0]]),
        ((0, 0, 1), [[x0, 0, z1], [x1, 0, z1], [x1, h, z1], [x0, h, z1]]),
        ((-1, 0, 0), [[x0, 0, z0], [x0, 0, z1], [x0, h, z1], [x0, h, z0]]),
        ((1, 0, 0), [[x1, 0, z0], [x1, 0, z1], [x1, h, z1], [x1, h, z0]]),
        ((0, 1, 0), [[x0, h, z0], [x1, h, z0], [x1, h, z1], [x0, h, z1]]),
    ]
    base = COLOURS[obj.color]
    for normal, corners in faces:
        corners = np.array(corners, dtype=np.float64)
        if np.dot(normal, camera.position - corners.mean(axis=0)) <= 0:
            continue  # back face
        fill = _shade(base, normal, light)
        draw.polygon(_poly(camera, corners), fill=fill, outline=_scaled_rgb(fill, 0.6))


def _draw_cylinder(img, draw, camera: Camera, obj: SceneObject, light) -> None:
    n, r, base = 48, obj.width / 2, COLOURS[obj.color]
    bottom = _circle(obj.x, obj.z, r, n)
    top = bottom + [0.0, obj.height, 0.0]
    for i in range(n):
        j = (i + 1) % n
        mid = (bottom[i] + bottom[j]) / 2
        normal = np.array([mid[0] - obj.x, 0.0, mid[2] - obj.z])
        if np.dot(normal, camera.position - mid) <= 0:
            continue
        fill = _shade(base, normal / np.linalg.norm(normal), light)
        draw.polygon(_poly(camera, np.array([bottom[i], bottom[j], top[j], top[i]])), fill=fill, outline=fill)
    if camera.elevation > obj.height:
        fill = _shade(base, (0, 1, 0), light)
        draw.polygon(_poly(camera, top), fill=fill, outline=_scaled_rgb(fill, 0.6))


def _draw_sphere(img, draw, camera: Camera, obj: SceneObject, light) -> None:
    """Ray-cast the sphere inside its 2D box and paste it through its hit mask (exact silhouette)."""
    u0, v0, u1, v1 = bbox_2d(camera, obj)
    u0, v0 = max(0, math.floor(u0) - 1), max(0, math.floor(v0) - 1)
    u1, v1 = min(camera.width, math.ceil(u1) + 1), min(camera.height, math.ceil(v1) + 1)
    if u1 <= u0 or v1 <= v0:
        return
    uu, vv = np.meshgrid(np.arange(u0, u1) + 0.5, np.arange(v0, v1) + 0.5)
    d = camera.rays(uu, vv)  # [h, w, 3]
    centre, r = obj.centre, obj.width / 2
    oc = camera.position - centre
    a = np.einsum("hwc,hwc->hw", d, d)
    b = 2 * d @ oc
    disc = b * b - 4 * a * (oc @ oc - r * r)
    hit = disc >= 0
    t = (-b - np.sqrt(np.where(hit, disc, 0.0))) / (2 * a)
    normal = (camera.position + t[..., None] * d - centre) / r
    k = 0.38 + 0.62 * np.clip(normal @ np.asarray(light), 0.0, None)
    rgb = np.clip(np.rint(np.asarray(COLOURS[obj.color]) * k[..., None]), 0, 255).astype(np.uint8)
    img.paste(Image.fromarray(rgb, "RGB"), (u0, v0), Image.fromarray(hit.astype(np.uint8) * 255, "L"))


_DRAW: dict[str, Callable] = {"box": _draw_box, "cylinder": _draw_cylinder, "sphere": _draw_sphere}


def render_scene(scene: Scene, *, supersample: int = 2) -> Image.Image:
    """Render at `supersample` x the size with a painter's algorithm (far first), then box-filter down."""
    camera = scene.camera.scaled(supersample)
    img = Image.new("RGB", (camera.width, camera.height), SKY)
    draw = ImageDraw.Draw(img)
    floor_rgb = FLOORS[scene.floor]
    _draw_floor(draw, camera, floor_rgb)
    for obj in sorted(scene.objects, key=_ground_distance, reverse=True):
        _draw_shadow(draw, camera, obj, scene.light, floor_rgb)
        _DRAW[obj.shape](img, draw, camera, obj, scene.light)
    return img.resize((scene.camera.width, scene.camera.height), Image.Resampling.BOX)


# --- ground-truth relations and questions ----------------------------------------------------------------


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
_RELATIONS: dict[str, Callable[[Scene, SceneObject, SceneObject], int]] = {
    "left": _cmp_left,
    "behind": _cmp_behind,
    "above": lambda s, a, b: _sign(a.height - b.height, 0.2),  # centres differ by >= 0.1 m
    "tall": lambda s, a, b: _ratio_sign(a.height, b.height, 1.15) if abs(a.height - b.height) >= 0.1 else 0,
    "wide": lambda s, a, b: _ratio_sign(a.width, b.width, 1.15) if abs(a.width - b.width) >= 0.1 else 0,
    "big": lambda s, a, b: _ratio_sign(a.volume, b.volume, 1.3),
}

# category -> (relation, sign, question, yes-answer, no-answer)
_PREDICATE_TEXT = {
    "left_predicate": (
        "left",
        1,
        "Is the {a} to the left of the {b}?",
        "is to the left of",
        "is to the right of",
    ),
    "right_predicate": (
        "left",
        -1,
        "Is the {a} to the right of the {b}?",
        "is to the right of",
        "is to the left of",
    ),
    "above_predicate": ("above", 1, "Is the {a} above the {b}?", "is above", "is below"),
    "below_predicate": ("above", -1, "Is the {a} below the {b}?", "is below", "is above"),
    "behind_predicate": ("behind", 1, "Is the {a} behind the {b}?", "is behind", "is in front of"),
    "front_predicate": ("behind", -1, "Is the {a} in front of the {b}?", "is in front of", "is behind"),
    "tall_predicate": ("tall", 1, "Is the {a} taller than the {b}?", "is taller than", "is shorter than"),
    "short_predicate": ("tall", -1, "Is the {a} shorter than the {b}?", "is shorter than", "is taller than"),
    "wide_predicate": ("wide", 1, "Is the {a} wider than the {b}?", "is wider than", "is thinner than"),
    "thin_predicate": ("wide", -1, "Is the {a} thinner than the {b}?", "is thinner than", "is wider than"),
    "big_predicate": ("big", 1, "Is the {a} bigger than the {b}?", "is bigger than", "is smaller than"),
    "small_predicate": ("big", -1, "Is the {a} smaller than the {b}?", "is smaller than", "is bigger than"),
}
# category -> (relation, sign, question, answer predicate)
_CHOICE_TEXT = {
    "tall_choice": ("tall", 1, "Which is taller, the {a} or the {b}?", "is taller"),
    "short_choice": ("tall", -1, "Which is shorter, the {a} or the {b}?", "is shorter"),
    "wide_choice": ("wide", 1, "Which is wider, the {a} or the {b}?", "is wider"),
    "thin_choice": ("wide", -1, "Which is thinner, the {a} or the {b}?", "is thinner"),
    "big_choice": ("big", 1, "Which is bigger, the {a} or the {b}?", "is bigger"),
    "small_choice": ("big", -1, "Which is smaller, the {a} or the {b}?", "is smaller"),
    "left_choice": ("left", 1, "Which is more to the left, the {a} or the {b}?", "is more to the left"),
    "right_choice": ("left", -1, "Which is more to the right, the {a} or the {b}?", "is more to the right"),
    "above_choice": ("above", 1, "Which is higher, the {a} or the {b}?", "is higher"),
    "below_choice": ("above", -1, "Which is lower, the {a} or the {b}?", "is lower"),
    "behind_choice": ("behind", 1, "Which is farther from the camera, the {a} or the {b}?", "is farther"),
    "front_choice": ("behind", -1, "Which is closer to the camera, the {a} or the {b}?", "is closer"),
}
# category -> (questions, value, answer); quantities are given in metres with two decimals
_PAIR_QUANTITIES = {
    "distance_data": (
        ("How far is the {a} from the {b}?", "What is the distance between the {a} and the {b}?"),
        centre_distance,
        "About {v:.2f} meters.",
    ),
    "horizontal_distance_data": (
        ("What is the horizontal distance between the {a} and the {b}?",),
        horizontal_distance,
        "About {v:.2f} meters.",
    ),
    "vertical_distance_data": (
        ("What is the vertical distance between the {a} and the {b}?",),
        vertical_distance,
        "About {v:.2f} meters.",
    ),
}
_OBJECT_QUANTITIES = {
    "height_data": (
        ("How tall is the {a}?", "What is the height of the {a}?"),
        "height",
        "The {a} is about {v:.2f} meters tall.",
    ),
    "width_data": (
        ("How wide is the {a}?", "What is the width of the {a}?"),
        "width",
        "The {a} is about {v:.2f} meters wide.",
    ),
}


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))] if items else None


def _pairs(scene: Scene) -> list[tuple[SceneObject, SceneObject]]:
    return list(permutations(scene.objects, 2))


def _plural(shape: str, k: int) -> str:
    return f"{shape}es" if shape == "box" and k != 1 else (f"{shape}s" if k != 1 else shape)


def make_question(
    category: str, scene: Scene, rng: np.random.Generator, want_yes: bool = True
) -> tuple[str, str] | None:
    """A (question, answer) of `category` about `scene`, or None if the scene has no clear case for it."""
    if category in _PREDICATE_TEXT:
        rel, sign, q, yes, no = _PREDICATE_TEXT[category]
        want = sign if want_yes else -sign
        pair = _pick(rng, [(a, b) for a, b in _pairs(scene) if _RELATIONS[rel](scene, a, b) == want])
        if pair is None:
            return None
        a, b = pair
        verb = yes if want_yes else no
        return q.format(
            a=a.name, b=b.name
        ), f"{'Yes' if want_yes else 'No'}, the {a.name} {verb} the {b.name}."
    if category in _CHOICE_TEXT:
        rel, sign, q, verb = _CHOICE_TEXT[category]
        pair = _pick(rng, [(a, b) for a, b in _pairs(scene) if _RELATIONS[rel](scene, a, b) != 0])
        if pair is None:
            return None
        a, b = pair
        winner = a if _RELATIONS[rel](scene, a, b) == sign else b
        return q.format(a=a.name, b=b.name), f"The {winner.name} {verb}."
    if category in _PAIR_QUANTITIES:
        questions, value, answer = _PAIR_QUANTITIES[category]
        pairs = _pairs(scene)
        if category == "vertical_distance_data":
            pairs = [(a, b) for a, b in pairs if vertical_distance(a, b) >= 0.05]
        pair = _pick(rng, pairs)
        if pair is None:
            return None
        a, b = pair
        q = _pick(rng, list(questions))
        return q.format(a=a.name, b=b.name), answer.format(v=value(a, b))
    if category in _OBJECT_QUANTITIES:
        questions, attr, answer = _OBJECT_QUANTITIES[category]
        obj = _pick(rng, list(scene.objects))
        return _pick(rng, list(questions)).format(a=obj.name), answer.format(a=obj.name, v=getattr(obj, attr))
    if category == "direction":
        # skip directions within 5 degrees of the boundary between two hours
        pair = _pick(rng, [(a, b) for a, b in _pairs(scene) if abs(clock_angle(a, b) % 30 - 15) > 5])
        if pair is None:
            return None
        a, b = pair
        q = f"If you stand at the {a.name} facing away from the camera, at what o'clock is the {b.name}?"
        return q, f"The {b.name} is at {clock_hour(a, b)} o'clock."
    if category == "count":
        shape = _pick(rng, [None, *SHAPES])
        if shape is None:
            k = len(scene.objects)
            return "How many objects are there in the image?", f"There are {k} objects."
        k = sum(o.shape == shape for o in scene.objects)
        answer = f"There is one {shape}." if k == 1 else f"There are {k or 'no'} {_plural(shape, k)}."
        return f"How many {_plural(shape, 2)} are there?", answer
    raise ValueError(f"unknown question category {category!r}")


def category_type(category: str) -> str:
    return "quantitative" if category in QUANTITATIVE else "qualitative"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One sentence naming every object and, where one is clear, a spatial relation between two of them."""
    names = [f"{_article(o.name)} {o.name}" for o in scene.objects]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    text = f"{listed[0].upper()}{listed[1:]} on a {scene.floor} floor."
    for category in rng.permutation(
        ["left_predicate", "behind_predicate", "front_predicate", "tall_predicate"]
    ):
        qa = make_question(str(category), scene, rng, want_yes=True)
        if qa is not None:
            return f"{text} The {qa[1].removeprefix('Yes, the ')}"
    return text


# --- dataset writing ------------------------------------------------------------------------------------


def _scene_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, split, index])


def _scene_meta(image: str, scene: Scene) -> dict:
    objects = []
    for o in scene.objects:
        objects.append(
            {
                "name": o.name,
                "shape": o.shape,
                "color": o.color,
                "rgb": list(COLOURS[o.color]),
                "position": [round(float(c), 4) for c in o.centre],
                "size": {"width": o.width, "height": o.height, "depth": o.depth},
                "distance_to_camera": round(camera_distance(scene.camera, o), 4),
                "bbox": [round(c, 1) for c in bbox_2d(scene.camera, o)],
            }
        )
    return {
        "image": image,
        "camera": scene.camera.to_json(),
        "floor": scene.floor,
        "light": list(scene.light),
        "objects": objects,
    }


def _conversation(turns: list[tuple[str, str]]) -> list[dict]:
    conv = []
    for i, (q, a) in enumerate(turns):
        conv.append({"from": "human", "value": f"<image>\n{q}" if i == 0 else q})
        conv.append({"from": "gpt", "value": a})
    return conv


def _qa_turns(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    n_turns = int(rng.integers(4, 8))
    turns = []
    for category in rng.permutation(list(TRAIN_CATEGORIES)):
        qa = make_question(str(category), scene, rng, want_yes=bool(rng.random() < 0.5))
        if qa is not None:
            turns.append(qa)
        if len(turns) == n_turns:
            break
    return turns


def _bench_items(scenes: list[Scene], seed: int) -> list[dict]:
    """Each item asks the least-used category the scene can answer, so categories stay balanced;
    predicates alternate between yes and no."""
    items: list[dict] = []
    used = dict.fromkeys(BENCH_CATEGORIES, 0)
    n_predicates = 0
    for i, scene in enumerate(scenes):
        rng = _scene_rng(seed, 2, i)
        asked: set[str] = set()
        for _ in range(BENCH_ITEMS_PER_IMAGE):
            for category in sorted(
                BENCH_CATEGORIES, key=lambda c: used[c]
            ):  # stable: ties keep the listed order
                if category in asked:
                    continue
                qa = make_question(category, scene, rng, want_yes=n_predicates % 2 == 0)
                if qa is not None:
                    break
            else:
                break
            asked.add(category)
            used[category] += 1
            n_predicates += category in _PREDICATE_TEXT
            question, answer = qa
            items.append(
                {
                    "id": str(len(items)),
                    "file_path": f"images/{i:06d}.png",
                    "text_q": question,
                    "qa_info": {"category": category, "type": category_type(category)},
                    "conversations": _conversation([(question, answer)]),
                }
            )
    return items


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


_OUTPUTS = ("images", "eval", "captions.json", "spatial_qa.json", "meta.json")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SgeoError(f"output path {out} exists and is not a folder; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SgeoError(f"output folder {out} is not empty; choose a new folder or pass overwrite=True")
        for name in _OUTPUTS:  # only what we write, never anything else in the folder
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "eval" / "images").mkdir(parents=True, exist_ok=True)


def generate_synthetic(
    out: str | Path,
    n: int,
    seed: int,
    *,
    image_size: tuple[int, int] = (224, 224),
    n_eval: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the synthetic spatial dataset to `out` (layout in the module docs); returns paths and counts.

    Deterministic: the same arguments give byte-identical files. Training and eval scenes come from
    disjoint random streams.
    """
    if not isinstance(n, int) or n < 1:
        raise SgeoError(f"n must be a positive number of images, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise SgeoError(f"seed must be a non-negative integer, got {seed!r}")
    width, height = image_size
    if not (32 <= width <= 4096 and 32 <= height <= 4096):
        raise SgeoError(f"image_size must be between 32 and 4096 pixels per side, got {image_size!r}")
    n_eval = max(20, n // 5) if n_eval is None else n_eval
    if n_eval < 0:
        raise SgeoError(f"n_eval must be >= 0, got {n_eval}")
    out = Path(out)
    _prepare_out(out, overwrite)

    captions, qa, train_meta = [], [], []
    for i in range(n):
        rng = _scene_rng(seed, 0, i)
        scene = sample_scene(rng, width, height)
        image = f"images/{i:06d}.png"
        render_scene(scene).save(out / image, format="PNG")
        sample_id = f"{i:06d}"
        captions.append(
            {
                "id": sample_id,
                "image": image,
                "conversations": _conversation([(CAPTION_PROMPT, caption(scene, rng))]),
            }
        )
        qa.append({"id": sample_id, "image": image, "conversations": _conversation(_qa_turns(scene, rng))})
        train_meta.append(_scene_meta(image, scene))

    eval_scenes, eval_meta = [], []
    for i in range(n_eval):
        scene = sample_scene(_scene_rng(seed, 1, i), width, height)
        image = f"images/{i:06d}.png"
        render_scene(scene).save(out / "eval" / image, format="PNG")
        eval_scenes.append(scene)
        eval_meta.append(_scene_meta(image, scene))
    bench = _bench_items(eval_scenes, seed)

    _write_json(out / "captions.json", captions)
    _write_json(out / "spatial_qa.json", qa)
    _write_json(out / "eval" / "bench.json", bench)
    _write_json(
        out / "meta.json",
        {
            "generator": "sgeo.pipeline.synthetic",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "n": n,
            "n_eval": n_eval,
            "image_size": [width, height],
            "coordinates": "metres; x right, y up, z forward from the ground point below the camera; "
            "position is the object centre",
            "train": train_meta,
            "eval": eval_meta,
        },
    )
    return {
        "out": str(out),
        "images": n,
        "eval_images": n_eval,
        "captions_json": str(out / "captions.json"),
        "spatial_qa_json": str(out / "spatial_qa.json"),
        "bench_json": str(out / "eval" / "bench.json"),
        "meta_json": str(out / "meta.json"),
        "qa_turns": sum(len(s["conversations"]) // 2 for s in qa),
        "bench_items": len(bench),
    }
