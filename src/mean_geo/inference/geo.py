"""Where a satellite tile is: coordinates of its centre from the sources users actually have.

Looked up in this order, first hit wins:
1. a CSV with a header ``path,lat,lon`` (path relative to the gallery folder, or absolute, or a bare
   file name) or ``place,lat,lon`` (the place folder or file stem: a synthetic world's
   ``coordinates.csv``, building ids);
2. GeoTIFF tags in the tile itself (ModelTiepoint + ModelPixelScale, north-up);
3. a world file beside the tile (``.wld``, ``.jgw``, ``.pgw``, ``.tfw``, …: six lines A D B E C F);
4. the file name: slippy-map tiles ``…/<z>/<x>/<y>.<ext>`` (Web Mercator) or ``<lat>_<lon>.<ext>``.
The same sources give the tile's pixel → ground map where they can (refinement needs it): GeoTIFF
tags, world files and slippy-map names always, the CSV with an ``m_per_px`` column.
Coordinates from GeoTIFF tags and world files must be geographic (latitude/longitude, EPSG:4326).
A tile in a projected CRS (UTM, Web Mercator, …: the GeoTIFF's GeoKeys say so, a ``.prj`` beside a
world file says so, or the numbers are not latitudes/longitudes) is refused with one line rather
than reported as if it were lat/lon: give its lat/lon in the coordinates CSV, or reproject it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from PIL import Image

from mean_geo.data.coordinates import Coords, read_coordinates_csv, read_ground_sizes
from mean_geo.data.numbers import finite, is_pixel_map
from mean_geo.errors import MeanGeoError
from mean_geo.localization.geometry import TileGeometry, fit_geometry
from mean_geo.retrieval import distances

WORLD_FILE_SUFFIXES = {".jpg": ".jgw", ".jpeg": ".jgw", ".png": ".pgw", ".tif": ".tfw", ".tiff": ".tfw"}
_LATLON_NAME = re.compile(r"^(-?\d+(?:\.\d+)?)_(-?\d+(?:\.\d+)?)$")
GEOTIFF_TIEPOINT, GEOTIFF_SCALE, GEOTIFF_GEOKEYS = 33922, 33550, 34735
MODEL_TYPE_KEY, PROJECTED_CRS_KEY, MODEL_TYPE_PROJECTED = 1024, 3072, 1


def _projected(path: Path, crs: str, where: str) -> MeanGeoError:
    return MeanGeoError(
        f"{path}: its {where} coordinates are in a projected CRS ({crs}), not latitude/longitude; "
        "give the tile's lat/lon in coords_csv=... (path,lat,lon) or reproject it to EPSG:4326"
    )


def _geographic(path: Path, lat: float, lon: float, where: str) -> Coords:
    if finite(lat) is None or finite(lon) is None:
        raise MeanGeoError(f"{path}: its {where} georeferencing gives a non-finite position ({lat}, {lon})")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise _projected(path, f"x={lon:.1f}, y={lat:.1f} are not degrees", where)
    return (lat, lon)


def _geokeys(tags) -> dict[int, int]:
    """GeoKey id -> short value, from the GeoKeyDirectory tag (header of 4, then 4 per key)."""
    raw = tuple(tags.get(GEOTIFF_GEOKEYS, ()) or ())
    return {raw[i]: raw[i + 3] for i in range(4, len(raw) - 3, 4) if raw[i + 1] == 0}


def geotiff_geometry(path: Path) -> TileGeometry | None:
    """The pixel → lat/lon map from a GeoTIFF's ModelTiepoint + ModelPixelScale tags (north-up)."""
    placed = _geotiff(path)
    return placed[0] if placed else None


def world_file_geometry(path: Path) -> TileGeometry | None:
    """The pixel → lat/lon map of a world file beside the tile (six lines A D B E C F, pixel centres)."""
    placed = _world_file(path)
    return placed[0] if placed else None


def _geotiff(path: Path) -> tuple[TileGeometry, Coords] | None:
    """The GeoTIFF tags' map and the tile's centre (checked to be a latitude/longitude)."""
    try:
        with Image.open(path) as img:
            tags = getattr(img, "tag_v2", None)
            if not tags or GEOTIFF_TIEPOINT not in tags or GEOTIFF_SCALE not in tags:
                return None
            tie, scale = tags[GEOTIFF_TIEPOINT], tags[GEOTIFF_SCALE]
            keys = _geokeys(tags)
            w, h = img.size
    except OSError:
        return None
    if keys.get(MODEL_TYPE_KEY) == MODEL_TYPE_PROJECTED or PROJECTED_CRS_KEY in keys:
        code = keys.get(PROJECTED_CRS_KEY)
        raise _projected(path, f"EPSG:{code}" if code and code != 32767 else "GeoTIFF model type: projected", "GeoTIFF")
    # tiepoint: raster corner (i, j) -> model (x, y); a pixel's centre is at corner + 0.5; y falls downwards
    geometry = TileGeometry(
        scale[0], 0.0, 0.0, -scale[1], tie[3] + (0.5 - tie[0]) * scale[0], tie[4] - (0.5 - tie[1]) * scale[1]
    )
    return geometry, _geographic(path, *geometry.to_latlon((w - 1) / 2, (h - 1) / 2), "GeoTIFF")


def _world_file(path: Path) -> tuple[TileGeometry, Coords] | None:
    """The world file's map and the tile's centre (checked to be a latitude/longitude)."""
    candidates = [path.with_suffix(".wld")]
    if path.suffix.lower() in WORLD_FILE_SUFFIXES:
        candidates.append(path.with_suffix(WORLD_FILE_SUFFIXES[path.suffix.lower()]))
    for wf in candidates:
        if wf.is_file():
            try:
                values = [float(v) for v in wf.read_text().split()[:6]]
                with Image.open(path) as img:
                    w, h = img.size
            except (ValueError, OSError):
                raise MeanGeoError(f"{wf}: expected six numbers (a world file)") from None
            if not is_pixel_map(values):
                raise MeanGeoError(f"{wf}: expected six finite numbers with a pixel size that is not 0 (a world file)")
            prj = path.with_suffix(".prj")
            if prj.is_file() and "PROJCS" in prj.read_text(errors="ignore").upper():
                raise _projected(path, f"{prj.name} names a PROJCS", "world-file")
            geometry = TileGeometry(*values)
            return geometry, _geographic(path, *geometry.to_latlon((w - 1) / 2, (h - 1) / 2), "world-file")
    return None


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

    The geometry comes from GeoTIFF tags, a world file or a slippy-map name, or from the CSV: a
    ``m_per_px`` column gives a north-up tile of that ground size per pixel around its centre.

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
        elif placed := _geotiff(p) or _world_file(p):
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
