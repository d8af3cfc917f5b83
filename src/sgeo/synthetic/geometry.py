"""Exact geometry of a scene per pixel: the 3D point each camera ray hits first, as MoGe predicts it.

A point map in MoGe's convention (OpenCV camera frame: x right, y down, z forward, metres) with a mask of the
pixels that see something (the floor or an object; the sky sees nothing) and the index of the object hit
(-1: the floor). Rays are intersected analytically with the floor plane and with every box (axis-aligned
slabs), cylinder (vertical, capped) and sphere; the nearest hit wins, so occlusion is exact.
"""

from __future__ import annotations

import numpy as np

from .scene import Camera, Scene, SceneObject

_FAR = np.inf


def _box_hits(origin: np.ndarray, dirs: np.ndarray, obj: SceneObject) -> np.ndarray:
    lo = np.array([obj.x - obj.width / 2, 0.0, obj.z - obj.depth / 2])
    hi = np.array([obj.x + obj.width / 2, obj.height, obj.z + obj.depth / 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (lo - origin) / dirs, (hi - origin) / dirs  # [N, 3] each
    near = np.nanmax(np.minimum(t0, t1), axis=1)
    far = np.nanmin(np.maximum(t0, t1), axis=1)
    return np.where((near <= far) & (near > 0), near, _FAR)


def _cylinder_hits(origin: np.ndarray, dirs: np.ndarray, obj: SceneObject) -> np.ndarray:
    r = obj.width / 2
    ox, oz = origin[0] - obj.x, origin[2] - obj.z
    dx, dz, dy = dirs[:, 0], dirs[:, 2], dirs[:, 1]
    a, b, c = dx**2 + dz**2, 2 * (ox * dx + oz * dz), ox**2 + oz**2 - r**2
    disc = b**2 - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        side = (-b - np.sqrt(disc)) / (2 * a)  # the nearer intersection with the infinite cylinder
    y = origin[1] + side * dy
    side = np.where((disc >= 0) & (side > 0) & (y >= 0) & (y <= obj.height), side, _FAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = (obj.height - origin[1]) / dy  # the top disc (the camera is never below the floor)
    px, pz = ox + cap * dx, oz + cap * dz
    cap = np.where((cap > 0) & (px**2 + pz**2 <= r**2), cap, _FAR)
    return np.minimum(side, cap)


def _sphere_hits(origin: np.ndarray, dirs: np.ndarray, obj: SceneObject) -> np.ndarray:
    r, oc = obj.width / 2, origin - obj.centre
    a, b, c = np.sum(dirs**2, axis=1), 2 * dirs @ oc, oc @ oc - r**2
    disc = b**2 - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    return np.where((disc >= 0) & (t > 0), t, _FAR)


_HITS = {"box": _box_hits, "cylinder": _cylinder_hits, "sphere": _sphere_hits}


def _pixel_rays(camera: Camera, width: int, height: int) -> np.ndarray:
    """World ray directions [height * width, 3] through the centres of a width x height pixel grid."""
    u = (np.arange(width) + 0.5) * camera.width / width
    v = (np.arange(height) + 0.5) * camera.height / height
    uu, vv = np.meshgrid(u, v)
    return camera.rays(uu, vv).reshape(-1, 3)


def ray_hits(scene: Scene, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(world points [height * width, 3], hit [N] bool, object [N] int) of the rays through the centres of a
    width x height grid over `scene`'s image: the first point each ray hits (world frame: x right, y up from
    the floor, z forward), whether it hits anything (the sky: no), and which object (-1: the floor)."""
    camera = scene.camera
    dirs = _pixel_rays(camera, width, height)
    origin = camera.position
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where(dirs[:, 1] < 0, -origin[1] / dirs[:, 1], _FAR)
    hits = np.stack([floor] + [_HITS[o.shape](origin, dirs, o) for o in scene.objects], axis=1)  # [N, 1 + K]
    nearest = hits.argmin(axis=1)
    t = hits[np.arange(len(hits)), nearest]
    mask = np.isfinite(t)
    world = origin + dirs * np.where(mask, t, 0.0)[:, None]
    return world, mask, np.where(mask, nearest - 1, -1)


def point_map(scene: Scene, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points [height, width, 3] float32, mask [height, width] bool, object [height, width] int8) of
    `scene` sampled on a width x height grid over its image: OpenCV camera-frame points in metres, whether
    the pixel sees the floor or an object, and which object (index into `scene.objects`; -1: floor)."""
    world, mask, obj = ray_hits(scene, width, height)
    cam = (world - scene.camera.position) @ scene.camera.axes().T  # right, up, forward
    points = np.stack([cam[:, 0], -cam[:, 1], cam[:, 2]], axis=1)  # OpenCV: y down
    points[~mask] = 0.0
    shape = (height, width)
    return (
        points.reshape(*shape, 3).astype(np.float32),
        mask.reshape(shape),
        obj.astype(np.int8).reshape(shape),
    )
