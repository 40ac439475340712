"""``python -m mean_geo.tile MAP.tif --out tiles/ --tile-m 200 --overlap 0.5``: cut a georeferenced
map into georeferenced square tiles of a ground size, ready for ``python -m mean_geo.index``.

Any raster GDAL reads, in any CRS, of any size (windowed reads, bounded memory); several
``--tile-m`` give one subfolder each (as zoom levels); nodata-only tiles are skipped and counted
(:mod:`mean_geo.localization.tiling`).  Needs the ``geo`` extra (rasterio, pyproj).
"""

from __future__ import annotations

import argparse
import sys
import time

from mean_geo.cli import ToolParser, report_user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ToolParser(prog="python -m mean_geo.tile", description=__doc__)
    p.add_argument("raster", help="a georeferenced map: GeoTIFF, VRT, or an image with a world file and .prj")
    p.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    p.add_argument(
        "--tile-m", type=float, nargs="+", default=[200.0], help="tile side in ground metres, one or several"
    )
    p.add_argument("--overlap", type=float, default=0.5, help="share of a tile its neighbour overlaps, [0, 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from mean_geo.localization.tiling import tile_raster

    start = time.perf_counter()
    with tqdm(total=0, desc="tiles", unit="tile", disable=args.quiet) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = tile_raster(args.raster, args.out, args.tile_m, args.overlap, progress)
    print(f"wrote {report.summary()} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
