"""Cut a georeferenced raster of any size into square tiles of a ground size, each georeferenced.

A map (an orthophoto, a satellite mosaic; any CRS rasterio reads) becomes the gallery of an index:
tiles of ``tile_m`` ground metres a side (measured geodesically at the map's centre, so a Web
Mercator or a lat/lon map gets true metres too), stepping by ``tile_m · (1 - overlap)``, the last
row and column flush with the map's edge so every pixel is in a tile.  Each tile is written as a
GeoTIFF with its own transform and the map's CRS (what :mod:`mean_geo.localization.georef` reads
back), named ``<map>_<size>m_r<row>_c<col>.tif`` in ``<out>`` (the index names a tile by its file
name); a tile whose pixels are all nodata (or masked) is skipped and counted.

Memory stays bounded whatever the map's size: one tile's window is read at a time (windowed
reads), and GDAL's block cache is capped (:data:`GDAL_CACHE_MB`).  The folder appears complete
or not at all (written under a partial name, then renamed).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mean_geo.errors import MeanGeoError
from mean_geo.localization.georef import geo_libraries, read_georeference
from mean_geo.utils.atomic import atomic_folder

#: GDAL's block cache while tiling (its default is 5 % of the machine's memory)
GDAL_CACHE_MB = 64
#: what a tile folder was cut from, and how (beside the tiles)
MANIFEST = "tiling.json"


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one ground size lie on a map.

    Attributes:
        size_m: ground metres a side.
        width_px: a tile's width in map pixels.
        height_px: a tile's height in map pixels.
        cols: left pixel column of each tile column.
        rows: top pixel row of each tile row.
    """

    size_m: float
    width_px: int
    height_px: int
    cols: tuple[int, ...]
    rows: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.cols) * len(self.rows)


def _starts(extent: int, size: int, step: int) -> tuple[int, ...]:
    """Tile starts along one axis: every ``step`` pixels, the last one flush with the edge."""
    last = extent - size
    starts = list(range(0, last + 1, step))
    if starts[-1] != last:
        starts.append(last)
    return tuple(starts)


def plan_grid(width: int, height: int, pixel_m: tuple[float, float], size_m: float, overlap: float) -> TileGrid:
    """The tiles of one ground size on a ``width`` × ``height`` map of ``pixel_m`` (across, down) metres.

    Raises:
        MeanGeoError: a size smaller than 8 pixels, or larger than the map.
    """
    width_px = round(size_m / pixel_m[0])
    height_px = round(size_m / pixel_m[1])
    if min(width_px, height_px) < 8:
        raise MeanGeoError(
            f"--tile-m {size_m:g}: {width_px} x {height_px} pixels of this map ({pixel_m[0]:.3g} x {pixel_m[1]:.3g} m "
            "each); give a larger size"
        )
    if width_px > width or height_px > height:
        raise MeanGeoError(
            f"--tile-m {size_m:g}: {width_px} x {height_px} pixels, larger than the map ({width} x {height}); "
            f"the map is {width * pixel_m[0]:.0f} x {height * pixel_m[1]:.0f} m"
        )
    step_x = max(1, round(width_px * (1 - overlap)))
    step_y = max(1, round(height_px * (1 - overlap)))
    return TileGrid(size_m, width_px, height_px, _starts(width, width_px, step_x), _starts(height, height_px, step_y))


@dataclass
class TilingReport:
    """What a tiling wrote: per ground size, the tiles written and the nodata-only tiles skipped."""

    out: Path
    written: dict[float, int] = field(default_factory=dict)
    skipped: dict[float, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.written[s]} tiles of {s:g} m ({self.skipped[s]} nodata-only skipped)" for s in self.written]
        return f"{'; '.join(parts)} in {self.out}"


def size_folder(size_m: float) -> str:
    return f"{size_m:g}m"


def _windows(grid: TileGrid) -> Iterator[tuple[int, int, int, int]]:
    for r, row in enumerate(grid.rows):
        for c, col in enumerate(grid.cols):
            yield r, c, row, col


def tile_raster(
    raster: str | Path,
    out: str | Path,
    sizes_m: Sequence[float],
    overlap: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    manifest: dict | None = None,
) -> TilingReport:
    """Cut ``raster`` into georeferenced square tiles of each ground size.

    Args:
        raster: a georeferenced raster (GeoTIFF, a VRT, an image with a world file and ``.prj``).
        out: the folder to create (it must not exist, or be empty).
        sizes_m: tile sides in ground metres (several, as zoom levels: the size is in each name).
        overlap: the share of a tile its neighbour overlaps, in [0, 1).
        progress: called with (tiles done, tiles in all) after each tile.
        manifest: written as ``tiling.json`` into the folder (what it was cut from, and how).

    Returns:
        What was written.

    Raises:
        MeanGeoError: one line: no georeferencing, a rotated raster, an unknown CRS, a size that does
            not fit, an overlap outside [0, 1), an output folder that holds files.
    """
    rasterio, _ = geo_libraries()
    from rasterio.windows import Window

    raster, out = Path(raster), Path(out)
    if not raster.is_file():
        raise MeanGeoError(f"{raster}: no such raster")
    if not 0.0 <= overlap < 1.0:
        raise MeanGeoError(f"--overlap {overlap}: expected a share in [0, 1)")
    if not sizes_m or any(not (math.isfinite(s) and s > 0) for s in sizes_m):
        raise MeanGeoError(f"--tile-m {list(sizes_m)}: expected ground sizes in metres, each > 0")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MeanGeoError(f"--out {out}: exists and is not an empty folder (nothing is written over)")
    georef = read_georeference(raster, required=True)
    assert georef is not None
    pixel_m = georef.ground_pixel_m()
    grids = [plan_grid(georef.width, georef.height, pixel_m, float(s), overlap) for s in dict.fromkeys(sizes_m)]
    total = sum(g.count for g in grids)
    report = TilingReport(out)
    done = 0
    with atomic_folder(out) as partial:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024), rasterio.open(raster) as ds:
            nodata = ds.nodata
            crs = rasterio.crs.CRS.from_wkt(georef.crs_wkt)  # a world file's .prj, or lat/lon, made explicit
            for grid in grids:
                written = skipped = 0
                for r, c, row, col in _windows(grid):
                    window = Window(col, row, grid.width_px, grid.height_px)
                    pixels = ds.read(window=window)
                    mask = ds.dataset_mask(window=window)
                    empty = not mask.any() or (nodata is not None and bool(np.all(pixels == nodata)))
                    if empty:
                        skipped += 1
                    else:
                        name = f"{raster.stem}_{size_folder(grid.size_m)}_r{r:03d}_c{c:03d}.tif"
                        _write_tile(rasterio, partial / name, pixels, crs, ds.window_transform(window), nodata)
                        written += 1
                    done += 1
                    if progress is not None:
                        progress(done, total)
                report.written[grid.size_m], report.skipped[grid.size_m] = written, skipped
        if manifest is not None:
            (partial / MANIFEST).write_text(json.dumps(manifest))
    return report


def _write_tile(rasterio, path: Path, pixels: np.ndarray, crs, transform, nodata) -> None:
    """One tile as a deflate GeoTIFF with its own transform (PIL and GDAL both read it)."""
    profile = {
        "driver": "GTiff",
        "width": pixels.shape[2],
        "height": pixels.shape[1],
        "count": pixels.shape[0],
        "dtype": pixels.dtype,
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if pixels.shape[0] == 3 and pixels.dtype == np.uint8:
        profile["photometric"] = "RGB"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(pixels)


def tiles_for_index(raster: str | Path, folder: str | Path, tile_m: float, overlap: float) -> Path:
    """The tiles of ``raster`` for an index, cut into ``folder`` once: a folder already cut from the
    same map with the same settings is reused (a resumed index, every DDP rank), another refused.

    Raises:
        MeanGeoError: ``folder`` holds something else.
    """
    raster, folder = Path(raster).resolve(), Path(folder)
    wanted = {"raster": str(raster), "mtime_ns": raster.stat().st_mtime_ns, "tile_m": tile_m, "overlap": overlap}

    def matches() -> bool:
        try:
            return json.loads((folder / MANIFEST).read_text()) == wanted
        except (OSError, ValueError):
            return False

    if folder.exists() and any(folder.iterdir()):
        if matches():
            return folder
        raise MeanGeoError(f"{folder}: holds files that are not {raster.name}'s tiles at {tile_m:g} m; move it away")
    try:
        tile_raster(raster, folder, [tile_m], overlap, manifest=wanted)
    except (MeanGeoError, OSError):
        if matches():  # another rank finished first
            return folder
        raise
    return folder
