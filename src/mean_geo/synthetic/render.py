"""Render a :class:`Place` as a satellite tile (north-up orthographic) or an oblique drone photo.

The drone renderer casts one ray per pixel and intersects it with horizontal planes from the
tallest roof down to the ground (a height-field ray march with constant-z steps).  The first plane
at which the ray is inside a building/tree column is the hit, so roofs shift with height
(parallax) and facades become visible — the cross-view gap the model has to bridge is geometric,
not just photometric.  Map rows run north → south, columns west → east; world frame x east,
y north, z up (right-handed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from mean_geo.synthetic.world import Place

SKY = np.array([185, 200, 215], dtype=np.float32)


@dataclass(frozen=True)
class DroneCamera:
    """Where the drone is: orbit azimuth (radians, 0 = camera east of the target), altitude (m),
    pitch below the horizon (degrees), vertical field of view (degrees), roll (degrees)."""

    azimuth: float
    altitude: float
    pitch_deg: float = 60.0
    vfov_deg: float = 45.0
    roll_deg: float = 0.0


def cast_shadows(place: Place, sun_azimuth: float, sun_elevation_deg: float, steps: int = 10) -> np.ndarray:
    """Multiplicative shading (M, M) in (0, 1]: cells whose sun ray is blocked by a taller column."""
    h = place.height
    tan_e = np.tan(np.radians(sun_elevation_deg))
    # direction towards the sun in map (row, col) units: north = -row
    dr, dc = -np.sin(sun_azimuth), np.cos(sun_azimuth)
    shade = np.ones_like(h)
    reach = max(place.max_height / tan_e, 1.0) / place.cell_m
    for k in range(1, steps + 1):
        dist = reach * k / steps
        sr, sc = int(round(dr * dist)), int(round(dc * dist))
        shifted = np.roll(h, (-sr, -sc), axis=(0, 1))
        blocked = shifted > h + dist * place.cell_m * tan_e
        shade = np.where(blocked, 0.6, shade)
    return shade.astype(np.float32)


def render_satellite(place: Place, shade: np.ndarray, size_px: int, side_m: float) -> np.ndarray:
    """North-up orthographic tile of ``side_m`` metres centred on the target → (S, S, 3) uint8."""
    albedo = np.clip(place.colour * shade[..., None], 0, 255).astype(np.uint8)
    half = side_m / place.cell_m / 2
    mid = place.size / 2
    box = (mid - half, mid - half, mid + half, mid + half)
    tile = Image.fromarray(albedo).resize((size_px, size_px), Image.BILINEAR, box=box)
    return np.asarray(tile)


def _camera_rays(cam: DroneCamera, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and per-pixel ray directions (S*S, 3), looking at the target (0, 0, 0)."""
    ground_dist = cam.altitude / np.tan(np.radians(cam.pitch_deg))
    centre = np.array(
        [ground_dist * np.cos(cam.azimuth), ground_dist * np.sin(cam.azimuth), cam.altitude], dtype=np.float64
    )
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    roll = np.radians(cam.roll_deg)
    right, up = np.cos(roll) * right + np.sin(roll) * up, -np.sin(roll) * right + np.cos(roll) * up
    focal = (size_px / 2) / np.tan(np.radians(cam.vfov_deg) / 2)
    offs = ((np.arange(size_px) - size_px / 2 + 0.5) / focal).astype(np.float32)
    rays = (
        forward.astype(np.float32)[None, None]
        + offs[None, :, None] * right.astype(np.float32)
        - offs[:, None, None] * up.astype(np.float32)
    )
    return centre, rays.reshape(-1, 3)


def render_drone(
    place: Place,
    shade: np.ndarray,
    cam: DroneCamera,
    size_px: int,
    rng: np.random.Generator,
    level_step_m: float = 2.0,
) -> np.ndarray:
    """Oblique perspective photo of the target from ``cam`` → (S, S, 3) uint8.

    Rays are parametrised by their ground hit (x0, y0) and slope (dx/dz, dy/dz), so the point at
    height L is (x0 + L·sx, y0 + L·sy).  A coarse max-height map bounds, per ray, the tallest thing
    along its path; only rays that can hit something are marched, all levels at once.
    """
    centre, rays = _camera_rays(cam, size_px)
    m, cell = place.size, place.cell_m
    sx, sy = rays[:, 0] / rays[:, 2], rays[:, 1] / rays[:, 2]
    x0 = (centre[0] - centre[2] * sx).astype(np.float32)
    y0 = (centre[1] - centre[2] * sy).astype(np.float32)

    def cells(x: np.ndarray, y: np.ndarray, block: int = 1) -> np.ndarray:
        """Flat index into a map of ``m // block`` cells a side (clamped at the border)."""
        side = m // block
        col = x * (1 / (cell * block)) + side / 2
        row = y * (-1 / (cell * block)) + side / 2
        np.clip(col, 0, side - 1, out=col)
        np.clip(row, 0, side - 1, out=row)
        return row.astype(np.int32) * side + col.astype(np.int32)

    # per-ray bound on the height of anything along its path
    coarse_block = place.BOUND_BLOCK
    coarse = place.height_bound.reshape(-1)  # computed once per place, shared by all its drone views
    hmax = place.max_height
    reach = hmax * float(np.max(np.hypot(sx, sy)))
    n_samples = int(np.ceil(reach / (coarse_block * cell))) + 2
    bound = np.zeros_like(x0)
    for lvl in np.linspace(0, hmax, n_samples, dtype=np.float32):
        bound = np.maximum(bound, coarse[cells(x0 + lvl * sx, y0 + lvl * sy, coarse_block)])

    flat_h = place.height.reshape(-1)
    hit_level = np.zeros_like(x0)
    all_levels = np.arange(np.floor(hmax / level_step_m), 0, -1, dtype=np.float32) * level_step_m
    # march low-bound rays over fewer levels: most rays only pass ordinary roofs and trees
    split = min(30.0, hmax)
    for lo, hi in ((level_step_m, split), (split, np.inf)):
        active = np.flatnonzero((bound >= lo) & (bound < hi) if np.isfinite(hi) else (bound >= lo))
        levels = all_levels[all_levels <= min(hi, hmax)]
        if active.size == 0 or levels.size == 0:
            continue
        xa = x0[active, None] + levels[None, :] * sx[active, None]
        ya = y0[active, None] + levels[None, :] * sy[active, None]
        inside = flat_h[cells(xa, ya)] >= levels[None, :]
        first = inside.argmax(axis=1)
        got = inside[np.arange(active.size), first]
        hit_level[active[got]] = levels[first[got]]
    hit_x, hit_y, hit_z = x0 + hit_level * sx, y0 + hit_level * sy, hit_level
    idx = cells(hit_x, hit_y)
    rgb = place.colour.reshape(-1, 3)[idx] * shade.reshape(-1)[idx][:, None]
    # facades: darker than roofs, with storeys of windows and window columns
    wall = np.flatnonzero((flat_h[idx] - hit_z) >= level_step_m)
    window = (np.mod(hit_z[wall], 4.0) > 1.9) & (np.mod(hit_x[wall] + hit_y[wall], 2.5) < 1.2)
    light = rng.uniform(0.55, 0.8) * np.where(window, 0.55, 1.0).astype(np.float32)
    rgb[wall] = place.wall.reshape(-1, 3)[idx[wall]] * light[:, None]

    # atmosphere: haze grows with distance along the ray
    dist = np.sqrt((hit_x - centre[0]) ** 2 + (hit_y - centre[1]) ** 2 + (hit_z - centre[2]) ** 2)
    haze = 1 - np.exp(-dist / rng.uniform(1500, 4000))
    rgb = rgb * (1 - haze[:, None]) + SKY * haze[:, None]
    # different day, different camera: exposure, white balance, sensor noise
    rgb = rgb * (rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, size=3)).astype(np.float32)
    rgb += 3.0 * rng.standard_normal(size=(rgb.shape[0], 1), dtype=np.float32)  # luminance noise
    return np.clip(rgb, 0, 255).astype(np.uint8).reshape(size_px, size_px, 3)
