"""Georeferenced rasters, read by rasterio; any CRS to latitude/longitude by pyproj.

A tile or a map is georeferenced by GeoTIFF tags, or by a world file beside it (``.pgw``, ``.jgw``,
``.tfw``, ``.wld``) with its CRS in a ``.prj`` — whatever GDAL reads.  Its pixel → CRS map is the
raster's affine transform (north-up: no rotation or shear), and pyproj takes the CRS coordinates to
longitude/latitude (WGS 84).  A world file without a ``.prj`` is taken as latitude/longitude when
its numbers are degrees (as before there were CRSs); otherwise the CRS is unknown and the raster is
refused with one line, as a rotated raster and one placed only by ground control points are.

Refinement and the index work with :class:`~mean_geo.localization.geometry.TileGeometry`, an affine
map from pixel centres to latitude/longitude: for a raster in a projected CRS it is fitted by least
squares through a grid of pixels converted exactly (over a tile of a few hundred metres the fit
is within 1e-9 degrees).

rasterio and pyproj are the ``geo`` extra; without them, the sources that need no raster library
(a coordinates CSV, slippy-map and ``<lat>_<lon>`` names) still work, and a georeferenced raster is
one line naming the extra.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from mean_geo.errors import MeanGeoError
from mean_geo.localization.geometry import TileGeometry

#: world-file suffixes GDAL looks for beside an image (and ``.wld`` for any)
WORLD_FILE_SUFFIXES = {".jpg": ".jgw", ".jpeg": ".jgw", ".png": ".pgw", ".tif": ".tfw", ".tiff": ".tfw"}
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
GEO_EXTRA = "the geo extra (rasterio, pyproj): pip install -e '.[geo]'"


def geo_libraries():
    """``(rasterio, pyproj)``, or one line naming the extra to install."""
    try:
        import pyproj
        import rasterio
    except ImportError as exc:
        raise MeanGeoError(f"georeferenced rasters need {GEO_EXTRA} ({exc})") from None
    return rasterio, pyproj


#: the TIFF tags that georeference a GeoTIFF (ModelPixelScale, ModelTiepoint, ModelTransformation)
GEOTIFF_TAGS = (33550, 33922, 34264)


def _geotiff_tags(path: Path) -> bool:
    """Whether a TIFF's header has GeoTIFF tags (PIL reads the header only)."""
    try:
        with Image.open(path) as img:
            tags = getattr(img, "tag_v2", None) or {}
            return any(t in tags for t in GEOTIFF_TAGS)
    except OSError:
        return True  # rasterio will say what it is


def may_be_georeferenced(path: Path) -> bool:
    """Whether a file carries georeferencing by what GDAL reads: GeoTIFF tags, a world file or an
    ``.aux.xml`` beside it, or a raster format of its own (VRT, JPEG 2000, ERDAS): only those are
    opened with rasterio, so a plain gallery (DenseUAV's TIFFs) needs no raster library."""
    suffix = path.suffix.lower()
    if _world_file(path) is not None or Path(f"{path}.aux.xml").is_file():
        return True
    if suffix in (".tif", ".tiff"):
        return _geotiff_tags(path)
    return suffix in RASTER_SUFFIXES


@lru_cache(maxsize=64)
def _to_lonlat(crs_wkt: str):
    _, pyproj = geo_libraries()
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(crs_wkt), "EPSG:4326", always_xy=True)


@dataclass(frozen=True)
class Georeference:
    """A north-up raster's place on the Earth.

    Attributes:
        crs_wkt: its CRS (WKT).
        transform: the affine ``(a, b, c, d, e, f)`` of pixel *corner* coordinates to the CRS
            (``x = a·col + b·row + c``, ``y = d·col + e·row + f``; ``b = d = 0``), as rasterio gives it.
        width: pixels.
        height: pixels.
    """

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    def crs_xy(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CRS coordinates of pixel positions (pixel centres at whole numbers)."""
        a, b, c, d, e, f = self.transform
        cols, rows = np.asarray(cols, dtype=np.float64) + 0.5, np.asarray(rows, dtype=np.float64) + 0.5
        return a * cols + b * rows + c, d * cols + e * rows + f

    def lonlat(self, cols, rows) -> tuple[np.ndarray, np.ndarray]:
        """Longitude and latitude (degrees, WGS 84) of pixel positions (centres at whole numbers)."""
        x, y = self.crs_xy(cols, rows)
        lon, lat = _to_lonlat(self.crs_wkt).transform(x, y)
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

    def centre(self) -> tuple[float, float]:
        """``(lat, lon)`` of the raster's centre."""
        lon, lat = self.lonlat([(self.width - 1) / 2], [(self.height - 1) / 2])
        return float(lat[0]), float(lon[0])

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.meshgrid(np.linspace(0, self.width - 1, 5), np.linspace(0, self.height - 1, 5))
        return cols.ravel(), rows.ravel()

    def tile_geometry(self) -> TileGeometry:
        """The pixel-centre → lat/lon affine map, exact for a geographic CRS, fitted otherwise."""
        cols, rows = self._grid()
        lon, lat = self.lonlat(cols, rows)
        design = np.stack([cols, rows, np.ones_like(cols)], axis=1)
        (a, b, c), *_ = np.linalg.lstsq(design, lon, rcond=None)
        (d, e, f), *_ = np.linalg.lstsq(design, lat, rcond=None)
        return TileGeometry(float(a), float(d), float(b), float(e), float(c), float(f))

    def ground_pixel_m(self) -> tuple[float, float]:
        """Ground metres of one pixel across and down at the raster's centre (geodesic, WGS 84)."""
        _, pyproj = geo_libraries()
        geod = pyproj.Geod(ellps="WGS84")
        col, row = (self.width - 1) / 2, (self.height - 1) / 2
        lon, lat = self.lonlat([col, col + 1, col], [row, row, row + 1])
        across = geod.inv(lon[0], lat[0], lon[1], lat[1])[2]
        down = geod.inv(lon[0], lat[0], lon[2], lat[2])[2]
        return float(across), float(down)


def _world_file(path: Path) -> Path | None:
    """The world file beside ``path``, if there is one."""
    candidates = [path.with_suffix(".wld")]
    if path.suffix.lower() in WORLD_FILE_SUFFIXES:
        candidates.insert(0, path.with_suffix(WORLD_FILE_SUFFIXES[path.suffix.lower()]))
    return next((p for p in candidates if p.is_file()), None)


def _prj_crs(path: Path):
    """The CRS of a ``.prj`` beside ``path`` (GDAL's world-file readers do not look for it)."""
    prj = path.with_suffix(".prj")
    if not prj.is_file():
        return None
    _, pyproj = geo_libraries()
    try:
        return pyproj.CRS.from_user_input(prj.read_text(errors="replace").strip())
    except pyproj.exceptions.CRSError as exc:
        raise MeanGeoError(f"{prj}: not a CRS pyproj knows ({exc})") from None


def _degrees(transform, width: int, height: int) -> bool:
    a, b, c, d, e, f = transform
    xs = [c, c + a * width + b * height]
    ys = [f, f + d * width + e * height]
    return all(-180 <= x <= 180 for x in xs) and all(-90 <= y <= 90 for y in ys)


def read_georeference(path: str | Path, required: bool = False) -> Georeference | None:
    """A raster's georeferencing, read by rasterio.

    Args:
        path: the raster (GeoTIFF, or an image with a world file).
        required: a raster without georeferencing is an error, not None.

    Returns:
        Its georeference, or None when it has none (and ``required`` is false).

    Raises:
        MeanGeoError: one line naming the file: a rotated or sheared transform, ground control
            points only, an unknown CRS, a world file without a CRS whose numbers are not degrees,
            or (``required``) no georeferencing at all; the geo extra missing.
    """
    path = Path(path)
    rasterio, pyproj = geo_libraries()
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                transform, crs, gcps = ds.transform, ds.crs, ds.gcps[0]
                width, height = ds.width, ds.height
    except RasterioIOError as exc:
        raise MeanGeoError(f"{path}: not a raster GDAL can read ({exc})") from None
    values = (transform.a, transform.b, transform.c, transform.d, transform.e, transform.f)
    world = _world_file(path)
    if not all(math.isfinite(v) for v in values):
        raise MeanGeoError(f"{world or path}: its georeferencing is not finite numbers ({values})")
    if transform.is_identity and crs is None:
        if world is not None:  # there, but GDAL could not use it
            raise MeanGeoError(
                f"{world}: not a usable world file (expected six finite numbers A D B E C F, with a pixel size "
                "that is not 0)"
            )
        if gcps:
            raise MeanGeoError(
                f"{path}: placed by ground control points only; warp it to a north-up grid first "
                "(gdalwarp -t_srs EPSG:4326 or its UTM zone)"
            )
        if required:
            raise MeanGeoError(f"{path}: no georeferencing (no GeoTIFF tags, no world file beside it)")
        return None
    if transform.b != 0 or transform.d != 0:
        raise MeanGeoError(
            f"{path}: a rotated or sheared raster (transform {tuple(round(v, 9) for v in values)}); "
            "north-up rasters only: warp it first (gdalwarp)"
        )
    if transform.a == 0 or transform.e == 0:
        raise MeanGeoError(f"{path}: its transform has a pixel size of 0 ({values})")
    if crs is None:
        crs = _prj_crs(path)
    if crs is None:
        if not _degrees(values, width, height):
            raise MeanGeoError(
                f"{path}: georeferenced without a CRS, and its coordinates are not degrees (a world file "
                "without a .prj?): put the CRS's .prj beside it, or give the tile's lat/lon in a coordinates CSV"
            )
        crs = pyproj.CRS.from_epsg(4326)
    try:
        wkt = pyproj.CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs).to_wkt()
        _to_lonlat(wkt)
    except pyproj.exceptions.CRSError as exc:
        raise MeanGeoError(f"{path}: a CRS pyproj cannot use ({exc})") from None
    found = Georeference(wkt, values, width, height)
    lat, lon = found.centre()
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise MeanGeoError(f"{path}: its georeferencing places it off the Earth ({lat}, {lon})")
    return found


def locate_raster(path: Path) -> tuple[TileGeometry, tuple[float, float]] | None:
    """A tile's pixel → lat/lon map and its centre, where the file is georeferenced (else None).

    Only files that may carry georeferencing (:func:`may_be_georeferenced`) are opened.
    """
    if not may_be_georeferenced(path):
        return None
    found = read_georeference(path)
    if found is None:
        return None
    return found.tile_geometry(), found.centre()
