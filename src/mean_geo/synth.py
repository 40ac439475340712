"""``python -m mean_geo.synth``: write a synthetic cross-view world in a real dataset's layout."""

from __future__ import annotations

import argparse
import sys
import time

from mean_geo.cli import ToolParser, report_user_errors
from mean_geo.data.denseuav import HEIGHTS
from mean_geo.data.layouts import SUES200_ALTITUDES
from mean_geo.synthetic.flights import LAYOUT as FLIGHTS
from mean_geo.synthetic.flights import FlightSpec, write_flights_world
from mean_geo.synthetic.orthophoto import LAYOUT as ORTHOPHOTO
from mean_geo.synthetic.orthophoto import OrthophotoSpec, write_orthophoto
from mean_geo.synthetic.writer import LAYOUTS, SATELLITE_SIDE_M, WorldSpec, write_world


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ToolParser(prog="python -m mean_geo.synth", description=__doc__)
    p.add_argument("--layout", choices=(*LAYOUTS, FLIGHTS, ORTHOPHOTO), default="sues200")
    p.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")
    p.add_argument(
        "--locations", type=int, default=40, help="places (SUES-200: all; U1652: per split; GTA-UAV: photos drawn)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument(
        "--drone-per-location",
        type=int,
        default=10,
        help="drone images per place (and altitude); DenseUAV: one per height, as released",
    )
    p.add_argument(
        "--altitudes",
        type=int,
        nargs="+",
        default=None,
        help=f"drone altitudes (SUES-200: some of {list(SUES200_ALTITUDES)}; DenseUAV: some of {list(HEIGHTS)})",
    )
    p.add_argument(
        "--satellite-side-m", type=float, default=SATELLITE_SIDE_M, help="ground side of a satellite tile (m)"
    )
    p.add_argument(
        "--test-locations", type=int, default=None, help="held-out places (default: the real dataset's share)"
    )
    p.add_argument("--supersample", type=int, default=1, help="ray-trace drone photos at N x the size, then box-filter")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    f = p.add_argument_group("--layout flights (a tiled map and drone flights over it)")
    f.add_argument("--flights", type=int, default=FlightSpec.flights, help="flights (default %(default)s)")
    f.add_argument("--frames", type=int, default=FlightSpec.frames, help="frames a flight (default %(default)s)")
    f.add_argument("--fps", type=float, default=FlightSpec.fps, help="frames a second (default %(default)s)")
    f.add_argument("--speed", type=float, default=FlightSpec.speed_mps, help="ground speed, m/s (default %(default)s)")
    f.add_argument("--altitude", type=float, default=FlightSpec.altitude_m, help="metres (default %(default)s)")
    f.add_argument("--pitch", type=float, default=FlightSpec.pitch_deg, help="degrees below the horizon, 90 = nadir")
    f.add_argument("--tile-m", type=float, default=FlightSpec.tile_m, help="tile side, m (default %(default)s)")
    f.add_argument("--overlap", type=float, default=FlightSpec.overlap, help="tile overlap share (default %(default)s)")
    f.add_argument("--map-m", type=float, default=FlightSpec.map_m, help="map side, m (default %(default)s)")
    o = p.add_argument_group("--layout orthophoto (a georeferenced GeoTIFF and views cut from it; extra geo)")
    o.add_argument(
        "--crs", default=OrthophotoSpec.crs, help="the map's CRS (default %(default)s; EPSG:4326, EPSG:3857, ...)"
    )
    o.add_argument("--centre", type=float, nargs=2, default=None, metavar=("LAT", "LON"), help="the map's centre")
    o.add_argument("--pixel-m", type=float, default=OrthophotoSpec.pixel_m, help="ground metres a pixel")
    o.add_argument("--views", type=int, default=OrthophotoSpec.views, help="views cut from the map")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def orthophoto_spec(args: argparse.Namespace) -> OrthophotoSpec:
    """``--size`` is the map's side in pixels here (default 1024 when left at 256)."""
    lat, lon = args.centre if args.centre else (OrthophotoSpec.lat, OrthophotoSpec.lon)
    return OrthophotoSpec(
        crs=args.crs,
        lat=lat,
        lon=lon,
        size_px=args.size if args.size != 256 else OrthophotoSpec.size_px,
        pixel_m=args.pixel_m,
        views=args.views,
        seed=args.seed,
    )


def flight_spec(args: argparse.Namespace) -> FlightSpec:
    return FlightSpec(
        flights=args.flights,
        frames=args.frames,
        fps=args.fps,
        speed_mps=args.speed,
        altitude_m=args.altitude,
        pitch_deg=args.pitch,
        image_size=args.size,
        tile_m=args.tile_m,
        overlap=args.overlap,
        map_m=args.map_m,
        seed=args.seed,
    )


def world_spec(args: argparse.Namespace) -> WorldSpec:
    return WorldSpec(
        layout=args.layout,
        locations=args.locations,
        seed=args.seed,
        image_size=args.size,
        drone_per_location=args.drone_per_location,
        satellite_side_m=args.satellite_side_m,
        test_locations=args.test_locations,
        supersample=args.supersample,
        altitudes=tuple(args.altitudes or (HEIGHTS if args.layout == "denseuav" else SUES200_ALTITUDES)),
    )


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.layout == FLIGHTS:
        root = write_flights_world(flight_spec(args), args.out)
    elif args.layout == ORTHOPHOTO:
        root = write_orthophoto(orthophoto_spec(args), args.out)
    else:
        root = write_world(world_spec(args), args.out, workers=args.workers, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {args.layout} world to {root} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
