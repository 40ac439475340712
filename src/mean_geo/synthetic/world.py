"""Procedural 2.5-D neighbourhoods: one distinct place per location id.

A place is a height map plus roof/ground and wall colour maps on a metric grid centred on the
target.  Roads on a rotated grid, city blocks split into lots with buildings of varying height and
roof colour, parks with trees (which also have height), car parks, plazas, and sometimes a river.
Everything is a pure function of ``(seed, location_index)`` so worlds are reproducible byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

# Palettes are fixed so that colour is not an identity shortcut on its own: many places share them.
ROOF_COLOURS = np.array(
    [
        [150, 60, 50],
        [175, 95, 70],
        [120, 120, 125],
        [90, 90, 95],
        [200, 200, 195],
        [60, 70, 90],
        [140, 135, 110],
        [95, 75, 60],
        [180, 165, 140],
        [70, 100, 80],
        [210, 180, 120],
        [110, 55, 45],
    ],
    dtype=np.float32,
)
WALL_COLOURS = np.array(
    [[200, 190, 170], [170, 160, 150], [215, 210, 200], [150, 120, 100], [190, 170, 140], [120, 120, 130]],
    dtype=np.float32,
)
GRASS = np.array([85, 125, 60], dtype=np.float32)
SOIL = np.array([140, 125, 95], dtype=np.float32)
ROAD = np.array([70, 70, 72], dtype=np.float32)
MARKING = np.array([200, 200, 190], dtype=np.float32)
TREE = np.array([45, 90, 40], dtype=np.float32)
WATER = np.array([40, 75, 110], dtype=np.float32)
PAVING = np.array([165, 160, 150], dtype=np.float32)
PARKING = np.array([110, 110, 110], dtype=np.float32)


@dataclass(frozen=True)
class Place:
    """A square neighbourhood of ``size`` cells of ``cell_m`` metres, target at the centre."""

    height: np.ndarray  # (M, M) float32, metres above ground
    colour: np.ndarray  # (M, M, 3) float32, top-down albedo (roofs, ground, tree crowns)
    wall: np.ndarray  # (M, M, 3) float32, facade albedo of the building covering the cell
    cell_m: float

    @property
    def size(self) -> int:
        return self.height.shape[0]

    @property
    def max_height(self) -> float:
        return float(self.height.max())

    BOUND_BLOCK = 16  # cells per side of the squares of :attr:`height_bound`

    @cached_property
    def height_bound(self) -> np.ndarray:
        """Max height over ``BOUND_BLOCK``-cell squares, dilated by one square: a conservative upper
        bound the drone renderer uses to skip rays that cannot hit anything tall."""
        block = self.BOUND_BLOCK
        m = self.size // block * block
        coarse = self.height[:m, :m].reshape(m // block, block, m // block, block).max(axis=(1, 3))
        padded = np.pad(coarse, 1)
        rows, cols = padded.shape
        shifts = [padded[1 + dr : rows - 1 + dr, 1 + dc : cols - 1 + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
        return np.max(shifts, axis=0)


def smooth_noise(rng: np.random.Generator, size: int, coarse: int) -> np.ndarray:
    """Value noise in [0, 1] of shape (size, size): a coarse random grid upsampled bicubically."""
    grid = rng.random((coarse, coarse), dtype=np.float32)
    up = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)


def _hash2(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic per-cell integer hash of two integer grids (for per-block/per-lot choices)."""
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return (h ^ (h >> 16)) & 0x7FFFFFFF


def generate_place(seed: int, location: int, radius_m: float = 300.0, cell_m: float = 1.0) -> Place:
    """Build the neighbourhood of one location.  Different ``location`` ⇒ a different place.

    Written for speed (it is most of the cost of a world): float32 throughout, and each layer is
    painted only onto the cells it covers rather than blended over the whole map.
    """
    rng = np.random.default_rng([seed, location, 7])
    m = int(round(2 * radius_m / cell_m))
    coords = (np.arange(m, dtype=np.float32) - m / 2 + 0.5) * cell_m
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # y grows southwards (image rows)

    # --- roads on a rotated grid, spacing and width vary per place
    theta = rng.uniform(0, np.pi / 2)
    c, s = float(np.cos(theta)), float(np.sin(theta))
    u = c * xx + s * yy + rng.uniform(0, 200)
    v = -s * xx + c * yy + rng.uniform(0, 200)
    spacing_u, spacing_v = rng.uniform(45, 95), rng.uniform(45, 95)
    road_w = rng.uniform(6, 12)
    fbu, fbv = np.floor(u / spacing_u), np.floor(v / spacing_v)
    lu, lv = u - fbu * spacing_u, v - fbv * spacing_v  # position inside the block, [0, spacing)
    bu, bv = fbu.astype(np.int64), fbv.astype(np.int64)
    road = (lu < road_w) | (lv < road_w)
    marking = road & ((np.abs(lu - road_w / 2) < 0.5) | (np.abs(lv - road_w / 2) < 0.5))
    marking &= (np.floor((u + v) * 0.25).astype(np.int64) & 1) == 0  # dashed centre lines, 4 m dashes

    # --- ground albedo: grass/soil mix
    ground_mix = smooth_noise(rng, m, 9)[..., None]
    colour = GRASS + (SOIL - GRASS) * ground_mix
    colour *= 0.9 + 0.2 * smooth_noise(rng, m, 40)[..., None]
    height = np.zeros((m, m), dtype=np.float32)
    wall = np.zeros((m, m, 3), dtype=np.float32)

    # --- block types: 0 buildings, 1 park, 2 car park, 3 plaza; density rises towards a random centre
    salt = int(rng.integers(1 << 30))
    block_hash = _hash2(bu, bv, salt)
    urban = smooth_noise(rng, m, 4) * 0.7 + rng.uniform(0.2, 0.5)
    block_kind = np.where((block_hash % 100) < urban * 100, 0, 1 + (block_hash // 100) % 3)
    inner = ~road

    # lots: split each block into 1-4 x 1-3 lots, each lot a building with a set-back
    n_lu = 1 + (block_hash // 7) % 4
    n_lv = 1 + (block_hash // 29) % 3
    span_u, span_v = spacing_u - road_w, spacing_v - road_w
    pu = (lu - road_w) * (1 / span_u) * n_lu
    pv = (lv - road_w) * (1 / span_v) * n_lv
    lot_u, lot_v = np.floor(pu).astype(np.int64), np.floor(pv).astype(np.int64)
    fu, fv = pu - lot_u, pv - lot_v
    lot_hash = _hash2(bu * 8 + lot_u, bv * 8 + lot_v, salt + 1)
    margin = 0.08 + (lot_hash % 17) * 0.01
    in_footprint = (fu > margin) & (fu < 1 - margin) & (fv > margin) & (fv < 1 - margin)
    urban_block = inner & (block_kind == 0)
    building = urban_block & in_footprint & ((lot_hash // 17) % 10 < 8)
    lots = lot_hash[building]
    tall = (lots // 170) % 10 == 0  # a few towers for strong parallax
    b_height = 6 + (lots // 1700) % 19 + np.where(tall, 25 + (lots // 33) % 20, 0)
    # a roof ridge/shade: darker half along the lot's longer axis
    ridge = np.where((fu[building] < 0.5) == ((lots // 5) % 2 == 0), 0.85, 1.0).astype(np.float32)
    colour[building] = ROOF_COLOURS[(lots // 3) % len(ROOF_COLOURS)] * ridge[:, None]
    height[building] = b_height
    wall[building] = WALL_COLOURS[(lots // 11) % len(WALL_COLOURS)]

    # yards around buildings: paving
    yard = urban_block & ~building
    colour[yard & (smooth_noise(rng, m, 60) > 0.45)] = PAVING

    # parks with trees (trees have height: they also show parallax)
    park = inner & (block_kind == 1)
    tree_noise = smooth_noise(rng, m, int(2 * radius_m / 6))
    trees = park & (tree_noise > 0.55)
    street_trees = inner & (np.minimum(lu, lv) < road_w + 2.5) & (tree_noise > 0.7) & ~building
    trees |= street_trees
    tn = tree_noise[trees]
    crown = TREE * (0.75 + 0.5 * tn[:, None])
    colour[trees] = crown
    height[trees] = 4 + 8 * tn
    wall[trees] = crown * 0.8

    parking = inner & (block_kind == 2)
    stripes = parking & (lu - np.floor(lu * (1 / 3.0)) * 3.0 < 0.3)
    colour[parking] = PARKING
    colour[stripes] = MARKING
    plaza = inner & (block_kind == 3)
    chequer = (np.floor((lu + lv) * 0.2).astype(np.int64) & 1) == 0  # 5 m paving squares
    colour[plaza] = PAVING * np.where(chequer[plaza], 1.0, 0.9).astype(np.float32)[:, None]

    colour[road] = ROAD
    colour[marking] = MARKING
    height[road] = 0.0

    # --- a river across some places
    if rng.random() < 0.35:
        phi = rng.uniform(0, np.pi)
        cp, sp = float(np.cos(phi)), float(np.sin(phi))
        d = cp * xx + sp * yy - rng.uniform(-120, 120)
        d += 25 * np.sin((-sp * xx + cp * yy) * (1 / rng.uniform(60, 140)))
        river = np.abs(d) < rng.uniform(12, 30)
        colour[river] = WATER * (0.9 + 0.2 * tree_noise[river][:, None])
        height[river] = 0.0

    np.clip(colour, 0, 255, out=colour)
    return Place(height=height, colour=colour, wall=wall, cell_m=cell_m)
