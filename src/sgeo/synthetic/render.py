"""Drawing a scene with PIL: sky, floor grid, shadows, and Lambert-shaded boxes, cylinders and spheres.

Objects are drawn far first (painter's algorithm), supersampled and box-filtered down, so that
perspective cues are real: farther objects are smaller and higher in the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLOURS, FLOORS, Camera, Scene, SceneObject, bbox_2d, circle_points, ground_distance

SKY = (190, 210, 235)


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
        pts = circle_points(obj.x, obj.z, obj.width / 2 * 1.05, 32)
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
    bottom = circle_points(obj.x, obj.z, r, n)
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
    for obj in sorted(scene.objects, key=ground_distance, reverse=True):
        _draw_shadow(draw, camera, obj, scene.light, floor_rgb)
        _DRAW[obj.shape](img, draw, camera, obj, scene.light)
    return img.resize((scene.camera.width, scene.camera.height), Image.Resampling.BOX)
