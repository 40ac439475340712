"""A map of the answers drawn from the index's own tiles: no internet needed.

The tiles around the answers are pasted where their ground geometry puts them (north-up tiles:
their footprint's bounding box), the top-k footprints outlined, each photo's position marked
(refined: red; a tile's centre: orange; a track: a line through the frames).  An XYZ basemap URL
(``https://…/{z}/{x}/{y}.png``) of the user's own goes underneath, where one is given and answers.
"""

from __future__ import annotations

import io
import logging
import math
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from mean_geo.localization.formats import PhotoAnswer
from mean_geo.retrieval.index_store import GalleryIndex

log = logging.getLogger(__name__)
COLOURS = {"refined": (220, 30, 30), "top1": (255, 150, 0), "track": (40, 90, 230)}
MAX_TILES = 64


class Frame:
    """Latitude/longitude ↔ canvas pixels over a box (equirectangular at the box's mean latitude)."""

    def __init__(self, box: tuple[float, float, float, float], side: int) -> None:
        south, west, north, east = box
        self.scale_x = math.cos(math.radians((south + north) / 2))
        width, height = (east - west) * self.scale_x, north - south
        self.span = max(width, height, 1e-9)
        self.west, self.north = west - (self.span - width) / self.scale_x / 2, north + (self.span - height) / 2
        self.side = side

    def px(self, lat: float, lon: float) -> tuple[float, float]:
        return (
            (lon - self.west) * self.scale_x / self.span * self.side,
            (self.north - lat) / self.span * self.side,
        )

    def latlon(self, x: float, y: float) -> tuple[float, float]:
        return self.north - y / self.side * self.span, self.west + x / self.side * self.span / self.scale_x


def _box(points: Sequence[tuple[float, float]], margin: float) -> tuple[float, float, float, float]:
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    dlat = max(max(lats) - min(lats), 1e-4) * margin
    dlon = max(max(lons) - min(lons), 1e-4) * margin
    return min(lats) - dlat, min(lons) - dlon, max(lats) + dlat, max(lons) + dlon


def _footprints(answers: Sequence[PhotoAnswer]) -> dict[str, list[tuple[float, float]]]:
    found = {}
    for answer in answers:
        for tile in answer.tiles:
            if tile.footprint:
                found[tile.tile] = tile.footprint
    return found


def _paste_tiles(canvas: Image.Image, frame: Frame, index: GalleryIndex, box) -> int:
    """The index's tiles inside ``box`` at their ground place; returns how many."""
    from mean_geo.localization.geometry import TileGeometry

    south, west, north, east = box
    pasted = 0
    for tile in index.tiles:
        latlon, geometry = tile.get("latlon"), tile.get("geometry")
        if not latlon or not geometry or not (south <= latlon[0] <= north and west <= latlon[1] <= east):
            continue
        path = Path(tile["path"])
        if not path.is_file():
            continue
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        map_ = TileGeometry(*geometry)
        w, h = rgb.size
        corners = [frame.px(*map_.to_latlon(c, r)) for c, r in ((-0.5, -0.5), (w - 0.5, h - 0.5))]
        (x0, y0), (x1, y1) = corners
        size = (max(1, round(x1 - x0)), max(1, round(y1 - y0)))
        canvas.paste(rgb.resize(size), (round(x0), round(y0)))
        pasted += 1
        if pasted >= MAX_TILES:
            break
    return pasted


def _slippy(lat: float, lon: float, z: int) -> tuple[float, float]:
    n = 2**z
    lat = max(min(lat, 85.0511), -85.0511)
    return (lon + 180) / 360 * n, (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n


def _basemap(canvas: Image.Image, frame: Frame, url: str, timeout_s: float = 5.0) -> int:
    """XYZ tiles of ``url`` under the canvas; returns how many came (0 when the server does not answer)."""
    north, west = frame.latlon(0, 0)
    south, east = frame.latlon(canvas.width, canvas.height)
    # a zoom where a 256-pixel tile is about as fine as the canvas
    z = max(0, min(19, round(math.log2(360 / max(east - west, 1e-9) * canvas.width / 256))))
    x0, y0 = _slippy(north, west, z)
    x1, y1 = _slippy(south, east, z)
    got = 0
    for x in range(math.floor(x0), math.floor(x1) + 1):
        for y in range(math.floor(y0), math.floor(y1) + 1):
            try:
                with urllib.request.urlopen(url.format(z=z, x=x, y=y), timeout=timeout_s) as response:  # noqa: S310
                    tile = Image.open(io.BytesIO(response.read())).convert("RGB")
            except Exception as exc:  # noqa: BLE001 - any failure: the map goes on without it
                log.warning("basemap %s: %s", url.format(z=z, x=x, y=y), exc)
                return got
            n = 2**z
            lon_a, lon_b = x / n * 360 - 180, (x + 1) / n * 360 - 180
            lat_a = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))
            lat_b = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (y + 1) / n))))
            (px0, py0), (px1, py1) = frame.px(lat_a, lon_a), frame.px(lat_b, lon_b)
            canvas.paste(tile.resize((max(1, round(px1 - px0)), max(1, round(py1 - py0)))), (round(px0), round(py0)))
            got += 1
    return got


def draw_answers_map(
    answers: Sequence[PhotoAnswer],
    index: GalleryIndex,
    out: Path,
    side: int = 640,
    track: bool = False,
    basemap: str | None = None,
) -> Path | None:
    """The answers on a map of the index's tiles (PNG); None when no answer has a position."""
    placed = [(a.lat, a.lon) for a in answers if a.lat is not None and a.lon is not None]
    outlines = _footprints(answers)
    corners = [c for fp in outlines.values() for c in fp]
    if not placed:
        return None
    box = _box(placed + corners, 0.15)
    frame = Frame(box, side)
    canvas = Image.new("RGB", (side, side), (235, 235, 230))
    if basemap:
        _basemap(canvas, frame, basemap)
    _paste_tiles(canvas, frame, index, box)
    draw = ImageDraw.Draw(canvas)
    for footprint in outlines.values():
        ring = [frame.px(*c) for c in footprint]
        draw.line([*ring, ring[0]], fill=(255, 255, 255), width=2)
    if track and len(placed) >= 2:
        draw.line([frame.px(*p) for p in placed], fill=COLOURS["track"], width=3)
    for answer in answers:
        if answer.lat is None or answer.lon is None:
            continue
        x, y = frame.px(answer.lat, answer.lon)
        colour = COLOURS.get(answer.source, COLOURS["top1"])
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], fill=colour, outline=(255, 255, 255), width=2)
    canvas.save(out)
    return out
