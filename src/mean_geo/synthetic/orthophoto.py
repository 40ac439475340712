"""A synthetic orthophoto: one georeferenced GeoTIFF in a CRS of your choice, and drone-like views
cut from it at known positions (``views.csv``: ``path,lat,lon``), so the map-in, map-out path
(``tile`` → ``index`` → ``localize --refine --format geojson``) runs end to end without real data.

The map is a procedural neighbourhood (:func:`mean_geo.synthetic.world.generate_place`: roads,
buildings, parks) seen from above, ``pixel_m`` ground metres a pixel, centred on ``centre``
(latitude, longitude) in ``crs`` — a geographic one (EPSG:4326), a UTM zone, Web Mercator: the
pixel size in CRS units is what one ground metre is there, measured with pyproj.  A view is a
square crop of the map, turned a little and shrunk, as a nadir drone photo over the same ground.
Needs the ``geo`` extra (rasterio, pyproj).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mean_geo.errors import MeanGeoError
from mean_geo.synthetic.world import generate_place
from mean_geo.utils.atomic import atomic_folder

LAYOUT = "orthophoto"
MAP_NAME, VIEWS, VIEWS_CSV = "map.tif", "views", "views.csv"


@dataclass(frozen=True)
class OrthophotoSpec:
    """What the synthetic orthophoto looks like (recorded in ``world.json``)."""

    crs: str = "EPSG:32632"
    lat: float = 47.37
    lon: float = 8.54
    size_px: int = 1024
    pixel_m: float = 0.5
    views: int = 4
    view_px: int = 256
    view_m: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (-80 <= self.lat <= 80 and -180 <= self.lon <= 180):
            raise MeanGeoError(f"centre ({self.lat}, {self.lon}): expected a latitude in [-80, 80] and a longitude")
        if self.size_px < 64 or self.pixel_m <= 0 or self.view_px < 32 or self.views < 0:
            raise MeanGeoError("orthophoto: size_px >= 64, pixel_m > 0, view_px >= 32, views >= 0")
        if self.view_m / self.pixel_m * 1.5 > self.size_px:
            raise MeanGeoError(f"orthophoto: views of {self.view_m:g} m do not fit a map of {self.size_px} px")


def _libraries():
    try:
        import pyproj
        import rasterio
    except ImportError as exc:
        raise MeanGeoError(f"a synthetic orthophoto needs the geo extra: pip install -e '.[geo]' ({exc})") from None
    return rasterio, pyproj


def map_transform(spec: OrthophotoSpec):
    """The map's affine transform in its CRS: square ground pixels of ``pixel_m``, north up."""
    rasterio, pyproj = _libraries()
    try:
        crs = pyproj.CRS.from_user_input(spec.crs)
    except pyproj.exceptions.CRSError as exc:
        raise MeanGeoError(f"--crs {spec.crs}: not a CRS pyproj knows ({exc})") from None
    forward = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    geod = pyproj.Geod(ellps="WGS84")
    x0, y0 = forward.transform(spec.lon, spec.lat)
    # CRS units of one ground metre east and north at the centre
    lon_e, lat_e, _ = geod.fwd(spec.lon, spec.lat, 90.0, 1.0)
    lon_n, lat_n, _ = geod.fwd(spec.lon, spec.lat, 0.0, 1.0)
    xe, _ = forward.transform(lon_e, lat_e)
    _, yn = forward.transform(lon_n, lat_n)
    dx, dy = spec.pixel_m * abs(xe - x0), spec.pixel_m * abs(yn - y0)
    half = spec.size_px / 2
    return rasterio.transform.Affine(dx, 0.0, x0 - half * dx, 0.0, -dy, y0 + half * dy), crs


def _map_pixels(spec: OrthophotoSpec) -> np.ndarray:
    place = generate_place(spec.seed, 0, radius_m=spec.size_px * spec.pixel_m / 2, cell_m=spec.pixel_m)
    return np.clip(place.colour, 0, 255).astype(np.uint8)[: spec.size_px, : spec.size_px]


def write_orthophoto(spec: OrthophotoSpec, root: str | Path) -> Path:
    """Write ``root/map.tif``, ``root/views/view_XX.png`` and ``root/views.csv`` (complete or not at all).

    Returns:
        ``root``.

    Raises:
        MeanGeoError: ``root`` holds files, a CRS pyproj does not know, the geo extra missing.
    """
    rasterio, pyproj = _libraries()
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise MeanGeoError(f"--out {root}: exists and is not an empty folder (nothing is written over)")
    transform, crs = map_transform(spec)
    pixels = _map_pixels(spec)
    with atomic_folder(root) as tmp:
        profile = {
            "driver": "GTiff",
            "width": spec.size_px,
            "height": spec.size_px,
            "count": 3,
            "dtype": "uint8",
            "crs": crs.to_wkt(),
            "transform": transform,
            "compress": "deflate",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "photometric": "RGB",
        }
        with rasterio.open(tmp / MAP_NAME, "w", **profile) as dst:
            dst.write(pixels.transpose(2, 0, 1))
        (tmp / VIEWS).mkdir()
        to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        rng = np.random.default_rng([spec.seed, 11])
        image = Image.fromarray(pixels)
        side = spec.view_m / spec.pixel_m
        margin = side * 0.75
        rows = []
        for i in range(spec.views):
            col, row = rng.uniform(margin, spec.size_px - margin, size=2)
            angle = float(rng.uniform(-15, 15))
            view = _view(image, col, row, side, angle, spec.view_px)
            name = f"view_{i:02d}.png"
            view.save(tmp / VIEWS / name)
            x, y = transform @ (col, row)  # (col, row) in pixel-corner units: the crop's centre point
            lon, lat = to_lonlat.transform(x, y)
            rows.append(f"{VIEWS}/{name},{lat:.10f},{lon:.10f}")
        (tmp / VIEWS_CSV).write_text("path,lat,lon\n" + "\n".join(rows) + "\n")
        (tmp / "world.json").write_text(json.dumps({"layout": LAYOUT, **asdict(spec)}, indent=1) + "\n")
    return root


def _view(image: Image.Image, col: float, row: float, side: float, angle: float, out_px: int) -> Image.Image:
    """A square of ``side`` map pixels centred on (col, row), turned by ``angle`` degrees, at ``out_px``."""
    rad = math.radians(angle)
    c, s = math.cos(rad), math.sin(rad)
    # output pixel (u, v) -> map point: centre + R(angle) · ((u, v) - out/2) · side/out
    scale = side / out_px
    a, b = c * scale, -s * scale
    d, e = s * scale, c * scale
    ox = col - (a * out_px / 2 + b * out_px / 2)
    oy = row - (d * out_px / 2 + e * out_px / 2)
    return image.transform((out_px, out_px), Image.Transform.AFFINE, (a, b, ox, d, e, oy), Image.Resampling.BILINEAR)
