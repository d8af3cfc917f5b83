"""The scene model: a pinhole camera, objects on a ground plane, and where they fall in the image.

World coordinates are metres: x to the right, y up, z forward, origin on the ground below the camera;
the camera has no yaw or roll, only a downward pitch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
SHAPES = ("box", "cylinder", "sphere")


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

    def axes(self) -> np.ndarray:
        """The camera's axes in world coordinates, one per row: right, up, forward (pitched down by pitch_deg)."""
        t = math.radians(self.pitch_deg)
        return np.array([[1.0, 0.0, 0.0], [0.0, math.cos(t), math.sin(t)], [0.0, -math.sin(t), math.cos(t)]])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [N, 3] -> pixel coordinates [N, 2] (u right, v down) and depth along the view [N]."""
        cam = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.position) @ self.axes().T  # [N, 3]
        depth = cam[:, 2]
        u = self.width / 2 + self.focal * cam[:, 0] / depth
        v = self.height / 2 - self.focal * cam[:, 1] / depth
        return np.stack([u, v], axis=1), depth

    def rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """World directions (not normalised) through pixel coordinates u, v: [..., 3]."""
        cam = np.stack(
            [(u - self.width / 2) / self.focal, (self.height / 2 - v) / self.focal, np.ones_like(u)], -1
        )
        return cam @ self.axes()

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
            ring = circle_points(self.x, self.z, self.width / 2, 48)
            return np.concatenate([ring, ring + [0.0, self.height, 0.0]])
        return self.centre + _unit_sphere(256) * (self.width / 2)


@dataclass(frozen=True)
class Scene:
    camera: Camera
    objects: tuple[SceneObject, ...]
    floor: str
    light: tuple[float, float, float]  # unit vector towards the light


def circle_points(x: float, z: float, r: float, n: int, y: float = 0.0) -> np.ndarray:
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


def ground_distance(obj: SceneObject) -> float:
    return math.hypot(obj.x, obj.z)
