"""Where a satellite tile is: coordinates of its centre from the sources users actually have.

Looked up in this order, first hit wins:
1. a CSV with a header ``path,lat,lon`` (path relative to the gallery folder, or absolute, or a bare
   file name) or ``place,lat,lon`` (the place folder or file stem: a synthetic world's
   ``coordinates.csv``, building ids);
2. the tile's own georeferencing, in any CRS: GeoTIFF tags, or a world file beside it (``.pgw``,
   ``.jgw``, ``.tfw``, ``.wld``) with a ``.prj`` — read by rasterio, converted by pyproj
   (:mod:`mean_geo.localization.georef`; the ``geo`` extra);
3. the file name: slippy-map tiles ``…/<z>/<x>/<y>.<ext>`` (Web Mercator) or ``<lat>_<lon>.<ext>``.
The same sources give the tile's pixel → ground map where they can (refinement needs it): a
georeferenced raster and slippy-map names always, the CSV with an ``m_per_px`` column.  A rotated
raster, an unknown CRS, or a world file without a CRS whose numbers are not degrees is refused with
one line naming the file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from PIL import Image

from mean_geo.data.coordinates import Coords, read_coordinates_csv, read_ground_sizes
from mean_geo.localization.geometry import TileGeometry, fit_geometry
from mean_geo.localization.georef import locate_raster
from mean_geo.retrieval import distances

_LATLON_NAME = re.compile(r"^(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)$")


def raster_geometry(path: Path) -> TileGeometry | None:
    """The pixel → lat/lon map of a georeferenced tile (any CRS), None when it has none."""
    placed = locate_raster(path)
    return placed[0] if placed else None


def slippy_tile_centre(z: int, x: int, y: int) -> Coords:
    """Centre of a Web Mercator (XYZ / slippy-map) tile."""
    return _slippy_latlon(z, x + 0.5, y + 0.5)


def _slippy_latlon(z: int, x: float, y: float) -> Coords:
    n = 2**z
    return (math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n)))), x / n * 360.0 - 180.0)


def _slippy_name(path: Path) -> tuple[int, int, int] | None:
    parts = path.with_suffix("").parts[-3:]
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        z, x, y = (int(p) for p in parts)
        if 0 <= z <= 30 and x < 2**z and y < 2**z:
            return z, x, y
    return None


def slippy_geometry(path: Path) -> TileGeometry | None:
    """The pixel → lat/lon map of a ``…/<z>/<x>/<y>.<ext>`` tile, fitted through three of its
    pixel centres (:func:`~mean_geo.localization.geometry.fit_geometry`)."""
    name = _slippy_name(path)
    if name is None:
        return None
    z, x, y = name
    with Image.open(path) as img:
        w, h = img.size
    pixels = [(0.0, 0.0), (w - 1.0, 0.0), (0.0, h - 1.0)]
    return fit_geometry(pixels, [_slippy_latlon(z, x + (c + 0.5) / w, y + (r + 0.5) / h) for c, r in pixels])


def tile_centre_from_name(path: Path) -> Coords | None:
    m = _LATLON_NAME.match(path.stem)
    if m:
        lat, lon = float(m.group(1)), float(m.group(2))
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            return (lat, lon)
    name = _slippy_name(path)
    return slippy_tile_centre(*name) if name else None


def locate_tiles(paths: list[Path], root: Path, coords_csv: str | Path | None = None) -> list[Coords | None]:
    """Coordinates (or None) for every tile, from the first source that knows it.  A ``place,lat,lon``
    CSV (a synthetic world's ``coordinates.csv``, building ids) locates a tile by its place: the
    folder it is in (dataset galleries), else its file stem."""
    return locate_tiles_on_ground(paths, root, coords_csv)[0]


def locate_tiles_on_ground(
    paths: list[Path], root: Path, coords_csv: str | Path | None = None
) -> tuple[list[Coords | None], list[TileGeometry | None]]:
    """Every tile's centre and, where a source gives it, its pixel → ground map.

    The geometry comes from the tile's georeferencing (any CRS) or a slippy-map name, or from the
    CSV: a ``m_per_px`` column gives a north-up tile of that ground size per pixel around its centre.

    Returns:
        ``(centres, geometries)``, None where unknown.
    """
    key, table = read_coordinates_csv(coords_csv) if coords_csv else ("path", {})
    sizes = read_ground_sizes(coords_csv) if coords_csv else {}
    centres: list[Coords | None] = []
    geometries: list[TileGeometry | None] = []
    for p in paths:
        rel = p.relative_to(root) if p.is_relative_to(root) else p
        name: str | None
        if key == "place":
            name = rel.parts[0] if len(rel.parts) > 1 else p.stem
        else:
            name = next((n for n in (str(rel), str(p), p.name) if n in table), None)
        found = table.get(name) if name is not None else None
        geometry = None
        if found is not None:
            if name in sizes:
                with Image.open(p) as img:
                    geometry = TileGeometry.north_up(found, sizes[name], *img.size)
        elif placed := locate_raster(p):
            geometry, found = placed
        else:
            found = tile_centre_from_name(p)
            if found is not None and not _LATLON_NAME.match(p.stem):
                geometry = slippy_geometry(p)
        centres.append(found)
        geometries.append(geometry)
    return centres, geometries


def haversine_m(a: Coords, b: Coords) -> float:
    """Great-circle distance in metres."""
    return float(distances.haversine_m(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)))
