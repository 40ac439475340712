"""The synthetic world in GTA-UAV's layout: one map cut into tiles at four zooms, and nadir drone
photos whose ground footprints are known, so their IoUs with every tile are computed exactly.

The map is the first 2 x 2 zoom-4 tiles of GTA-UAV's geometry (1,382.4 m square at the origin;
4 + 16 + 64 + 256 tiles at zooms 4-7, named ``<z>_0_<x>_<y>.png``), its ground generated as the
other worlds' places.
A photo looks straight down from 100-300 m with GTA-UAV's field of view (74° × 59°) and a random
heading: its footprint is a rotated rectangle, its image that rectangle of the map.  Tiles with an
IoU above 0.39 are its positives, above 0.14 its semi-positives (Game4Loc's thresholds); a photo with
none is not kept.  Same-area: a random 4/5 trains; cross-area: the western half of the map trains
(GTA-UAV splits its map at x = 3,375 m the same way).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from mean_geo.data import gta_uav
from mean_geo.synthetic.render import cast_shadows
from mean_geo.synthetic.world import generate_place

HFOV_DEG, VFOV_DEG = 74.0, 59.0
ALTITUDE_RANGE_M = (100.0, 300.0)
POSITIVE_IOU, SEMI_POSITIVE_IOU = 0.39, 0.14
MAP_ZOOM = 4
MAP_TILES = 2  # zoom-4 tiles a side: enough tiles that a batch of pairs excluding each other fills


def tile_side_m(zoom: int) -> float:
    return gta_uav.MAP_PX / 2**zoom * gta_uav.METRES_PER_PX


def map_side_m() -> float:
    return MAP_TILES * tile_side_m(MAP_ZOOM)


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a simple polygon ``(N, 2)``."""
    if len(points) < 3:
        return 0.0
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def clip_to_box(points: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman: the part of a convex polygon inside an axis-aligned box."""
    poly = [tuple(p) for p in points]
    for axis, bound, keep_below in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if not poly:
            break
        out = []
        for k, current in enumerate(poly):
            previous = poly[k - 1]
            inside_c = current[axis] <= bound if keep_below else current[axis] >= bound
            inside_p = previous[axis] <= bound if keep_below else previous[axis] >= bound
            if inside_c != inside_p:
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                out.append(tuple(previous[i] + t * (current[i] - previous[i]) for i in range(2)))
            if inside_c:
                out.append(current)
        poly = out
    return np.array(poly, dtype=np.float64).reshape(-1, 2)


def footprint_iou(corners: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """IoU of a convex footprint ``(4, 2)`` with a tile ``(x0, y0, x1, y1)`` (metres)."""
    inter = polygon_area(clip_to_box(corners, *box))
    tile = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (polygon_area(corners) + tile - inter) if inter > 0 else 0.0


def footprint(centre: tuple[float, float], altitude: float, yaw: float) -> np.ndarray:
    """The ground rectangle a nadir camera sees: corners (upper-left, lower-left, lower-right,
    upper-right of the image) in map metres (x east, y south)."""
    half_w = altitude * math.tan(math.radians(HFOV_DEG / 2))
    half_h = altitude * math.tan(math.radians(VFOV_DEG / 2))
    right = np.array([math.cos(yaw), math.sin(yaw)])
    down = np.array([-math.sin(yaw), math.cos(yaw)])
    c = np.asarray(centre, dtype=np.float64)
    return np.array(
        [c - half_w * right - half_h * down, c - half_w * right + half_h * down, c + half_w * right + half_h * down]
        + [c + half_w * right - half_h * down]
    )


def tiles() -> list[tuple[str, tuple[float, float, float, float]]]:
    """(name, box in metres) of every tile of the map, zooms 4-7."""
    out = []
    for zoom in gta_uav.ZOOMS:
        side, n = tile_side_m(zoom), MAP_TILES * 2 ** (zoom - MAP_ZOOM)
        for x in range(n):
            for y in range(n):
                out.append((f"{zoom}_0_{x}_{y}.png", (x * side, y * side, (x + 1) * side, (y + 1) * side)))
    return out


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_gta_world(root: Path, photos: int, image_size: int, seed: int) -> None:
    """Write the map's tiles, ``photos`` drone photos and the four JSON files into ``root``."""
    side = map_side_m()
    place = generate_place(seed, 0, radius_m=side / 2, cell_m=1.0)
    rng = np.random.default_rng([seed, 29])
    shade = cast_shadows(place, rng.uniform(0, 2 * np.pi), rng.uniform(40, 65))
    albedo = Image.fromarray(np.clip(place.colour * shade[..., None], 0, 255).astype(np.uint8))
    per_m = place.size / side  # map cells per metre
    (root / "satellite").mkdir(parents=True)
    boxes = tiles()
    for name, (x0, y0, x1, y1) in boxes:
        crop = (x0 * per_m, y0 * per_m, x1 * per_m, y1 * per_m)
        tile = albedo.resize((image_size, image_size), Image.BILINEAR, box=crop)
        (root / "satellite" / name).write_bytes(_png(np.asarray(tile)))
    (root / "drone" / "images").mkdir(parents=True)
    records = []
    height_px = max(8, round(image_size * 3 / 4))  # GTA-UAV's photos are 4:3
    for k in range(photos):
        altitude = float(rng.uniform(*ALTITUDE_RANGE_M))
        centre = (float(rng.uniform(0.15, 0.85) * side), float(rng.uniform(0.15, 0.85) * side))
        yaw = float(rng.uniform(0, 2 * np.pi))
        corners = footprint(centre, altitude, yaw)
        ious = sorted(((footprint_iou(corners, box), name) for name, box in boxes), reverse=True)
        semi = [(name, iou) for iou, name in ious if iou > SEMI_POSITIVE_IOU]
        if not semi:
            continue
        quad = tuple(float(v) for v in (corners * per_m).reshape(-1))
        photo = albedo.transform((image_size, height_px), Image.QUAD, quad, Image.BILINEAR)
        name = f"{int(round(altitude, -2))}_0001_{k + 1:010d}.png"
        (root / "drone" / "images" / name).write_bytes(_png(np.asarray(photo)))
        positives = [(t, w) for t, w in semi if w > POSITIVE_IOU]
        records.append(
            {
                "drone_img_dir": "drone/images",
                "drone_img_name": name,
                "drone_loc_x_y": [round(v, 4) for v in corners.mean(axis=0)],
                "sate_img_dir": "satellite",
                "pair_pos_sate_img_list": [t for t, _ in positives],
                "pair_pos_sate_weight_list": [round(w, 6) for _, w in positives],
                "pair_pos_sate_loc_x_y_list": [list(gta_uav.tile_centre_m(t)) for t, _ in positives],
                "pair_pos_semipos_sate_img_list": [t for t, _ in semi],
                "pair_pos_semipos_sate_weight_list": [round(w, 6) for _, w in semi],
                "pair_pos_semipos_sate_loc_x_y_list": [list(gta_uav.tile_centre_m(t)) for t, _ in semi],
                "drone_metadata": {"height": round(altitude, 2), "drone_yaw": round(math.degrees(yaw), 2)},
            }
        )
    order = rng.permutation(len(records))
    cut = round(0.8 * len(records))
    same_train = [records[i] for i in sorted(order[:cut])]
    same_test = [records[i] for i in sorted(order[cut:])]
    west = [r for r in records if r["drone_loc_x_y"][0] < side / 2]
    east = [r for r in records if r["drone_loc_x_y"][0] >= side / 2]
    for split, train, test in (("cross_area", west, east), ("same_area", same_train, same_test)):
        (root / gta_uav.json_name(split, "train")).write_text(json.dumps(train))
        (root / gta_uav.json_name(split, "test")).write_text(json.dumps(test))
