"""``python -m mean_geo.localize PHOTO_OR_FOLDER_OR_VIDEO… --index FILE --ckpt MODEL [--k 5] [--track] [--json]``

For each drone photo: the ``k`` most similar satellite tiles of the index with their scores and
coordinates, printed as a table (or JSON with ``--json``), and a PNG strip per photo in ``--out``.
With ``--track``, the photos are one flight's frames (or a video): decoded together as a track
(docs/tracking.md), written to ``--out`` as track.csv and track.png, and measured in metres
(metrics.json) when ``--coords-csv`` knows where the frames were taken.  ``--format geojson kml gpx
csv json`` also writes the answers as ``<out>/localized.<format>`` (positions, top-k tile
footprints, the track) for map programs (:mod:`mean_geo.localization.formats`).
The model is the one the index was built with (a training checkpoint or an export folder); an
index from another model is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from mean_geo.cli import ToolParser, report_user_errors, whole_number_at_least
from mean_geo.cli.plugins import add_plugins_option, import_plugins
from mean_geo.data.layouts import list_images
from mean_geo.errors import MeanGeoError
from mean_geo.inference.answers import flight_answers, photo_answers
from mean_geo.inference.flight import (
    FRAME_CORRUPTIONS,
    STATIC,
    FlightTrack,
    TrackPoint,
    corrupt_frames,
    decode_flight,
    flight_metrics,
)
from mean_geo.inference.flight_files import (
    METRICS,
    TRACK_CSV,
    TRACK_PNG,
    flight_payload,
    track_rows,
    write_flight_metrics,
    write_track_csv,
    write_track_plot,
)
from mean_geo.inference.geo import haversine_m
from mean_geo.inference.loading import load_model
from mean_geo.inference.localization import Match, add_distances, localize, photo_positions, write_strip
from mean_geo.inference.refinement import RefinedPhoto, TileStore, draw_inliers, refine_photos
from mean_geo.localization.formats import FORMATS, SUFFIX, PhotoAnswer, render
from mean_geo.localization.matching import MATCHERS, Matcher, build_matcher
from mean_geo.localization.refine import RERANK, RefinedPosition, RefineSettings
from mean_geo.localization.sequence import SequenceFrame, is_video, order_frames, read_video
from mean_geo.localization.track import MotionModel, tile_spacing_m
from mean_geo.retrieval.index_store import read_index
from mean_geo.retrieval.search import BACKENDS
from mean_geo.utils import atomic
from mean_geo.utils.output import writable_folder


def parser() -> ToolParser:
    p = ToolParser(prog="python -m mean_geo.localize", description=__doc__.split("\n\n")[1])
    p.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="drone photos, or folders of them")
    p.add_argument("--index", required=True, help="a gallery index written by python -m mean_geo.index")
    p.add_argument("--ckpt", required=True, help="the model that built the index (.ckpt or export folder)")
    p.add_argument(
        "--k", type=whole_number_at_least(1), default=None, help="matches per photo (default 5; 20 with --track)"
    )
    p.add_argument("--out", default="localize_out", help="folder for the PNG strips (default localize_out)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="exact top-k search: auto (the faster on this machine, measured once), torch or faiss",
    )
    p.add_argument(
        "--coords-csv",
        default=None,
        help="where the photos were taken (path,lat,lon; or place,lat,lon with photos in place folders): "
        "adds each match's distance in metres",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--format",
        choices=[f for f in FORMATS if f != "table"],
        nargs="+",
        default=[],
        help="also write the answers as <out>/localized.<format>: geojson, kml, gpx (map programs), csv, json",
    )
    add_refine_options(p)
    add_track_options(p)
    add_plugins_option(p)
    return p


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def frame_range(text: str) -> tuple[int, int]:
    start, sep, end = text.partition(":")
    if not (sep and start.strip().isdigit() and end.strip().isdigit() and int(start) < int(end)):
        raise argparse.ArgumentTypeError(f"expected START:END frame numbers with START < END, got '{text}'")
    return int(start), int(end)


TRACK_ONLY = (
    "fps",
    "frames_csv",
    "sample_fps",
    "max_speed",
    "position_sigma",
    "temperature",
    "jump_probability",
    "corrupt_frames",
    "corruption",
)
MOTION = MotionModel()


def add_track_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("flights (--track; docs/tracking.md)")
    g.add_argument(
        "--track",
        nargs="?",
        const="offline",
        choices=("offline", "online"),
        default=None,
        help="the photos are one flight's frames (or a video): decode them as a track; offline (default: "
        "the smoother over all frames) or online (each frame from the frames before it)",
    )
    g.add_argument("--fps", type=positive_number, default=None, help="frames a second of frames in name order")
    g.add_argument("--frames-csv", default=None, help="the frames' times: path,time_s[,course_deg][,altitude_m]")
    g.add_argument("--sample-fps", type=positive_number, default=None, help="a video: keep this many frames a second")
    g.add_argument("--max-speed", type=positive_number, default=None, help=f"m/s (default {MOTION.max_speed_mps})")
    g.add_argument(
        "--position-sigma",
        type=positive_number,
        default=None,
        help="metres a frame's right tile centre may lie from where it looks (default: the tiles' spacing)",
    )
    g.add_argument(
        "--temperature", type=positive_number, default=None, help=f"score softmax (default {MOTION.temperature})"
    )
    g.add_argument(
        "--jump-probability",
        type=positive_number,
        default=None,
        help=f"weight of a move the speed forbids: re-acquisition (default {MOTION.jump_probability})",
    )
    g.add_argument(
        "--corrupt-frames",
        type=frame_range,
        default=None,
        metavar="START:END",
        help="evaluate re-acquisition: corrupt frames START..END-1 (0-based, time order) on purpose",
    )
    g.add_argument(
        "--corruption", choices=FRAME_CORRUPTIONS, default=None, help="what --corrupt-frames does (default static)"
    )


def add_refine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("refinement (--refine; docs/refinement.md)")
    g.add_argument(
        "--refine",
        action="store_true",
        help="verify the top-N tiles with local features and a homography: a position inside the tile, re-ranked "
        "by inliers (needs the tiles' ground geometry: world files, GeoTIFF tags, z/x/y names or m_per_px)",
    )
    g.add_argument("--top-n", type=whole_number_at_least(1), default=None, help="tiles verified per photo (default 5)")
    g.add_argument("--matcher", choices=MATCHERS, default=None, help="local features (default sift; loftr: kornia)")
    g.add_argument("--matcher-weights", default=None, help="the learned matcher's weights file (loftr)")
    g.add_argument("--rerank", choices=RERANK, default=None, help="order of the verified tiles (default inliers)")
    g.add_argument("--min-inliers", type=whole_number_at_least(4), default=None, help="fewer is a refusal (default 15)")


#: options that mean nothing without --refine / --track: given alone, they are refused, not ignored
REFINE_ONLY = ("top_n", "matcher", "matcher_weights", "rerank", "min_inliers")


def refine_settings(args: argparse.Namespace) -> RefineSettings | None:
    """The refinement asked for, checked before any work (its options without --refine refused)."""
    if not args.refine:
        given = [name for name in REFINE_ONLY if getattr(args, name) is not None]
        if given:
            raise MeanGeoError(f"--{given[0].replace('_', '-')}: a refinement option; add --refine")
        return None
    defaults = RefineSettings()
    args.matcher = args.matcher or "sift"
    return RefineSettings(
        top_n=args.top_n or defaults.top_n,
        min_inliers=args.min_inliers or defaults.min_inliers,
        rerank=args.rerank or defaults.rerank,
    )


def check_track_options(args: argparse.Namespace) -> None:
    """Flight options without ``--track`` would be silently ignored: refused before any work."""
    if args.track:
        if args.fps is not None and args.frames_csv is not None:
            raise MeanGeoError("--fps and --frames-csv: give the frames' times one way")
        if args.corruption is not None and args.corrupt_frames is None:
            raise MeanGeoError("--corruption: says what --corrupt-frames does; give --corrupt-frames START:END")
        args.corruption = args.corruption or STATIC
        return
    given = [name for name in TRACK_ONLY if getattr(args, name) is not None]
    if given:
        raise MeanGeoError(f"--{given[0].replace('_', '-')}: a flight option; add --track")


def read_flight(items: list[str], args: argparse.Namespace, out: Path) -> list[SequenceFrame]:
    """The flight's frames in time order, from one video or from image files and folders."""
    paths = [Path(p).expanduser() for p in items]
    videos = [p for p in paths if is_video(p)]
    if videos:
        if len(paths) > 1:
            raise MeanGeoError(f"{videos[0]}: --track reads one video, or frames (files and folders), not both")
        if not videos[0].is_file():
            raise MeanGeoError(f"{videos[0]}: no such video")
        if args.frames_csv is not None:
            raise MeanGeoError("--frames-csv: a video's frames are timed by the video; leave it out")
        return read_video(videos[0], out / "frames", args.sample_fps)
    if args.sample_fps is not None:
        raise MeanGeoError("--sample-fps: only for a video")
    return order_frames(list_images(items, "photos"), fps=args.fps, frames_csv=args.frames_csv)


def note_frame_sizes(frames: list[SequenceFrame]) -> None:
    """A frame of another size mid-flight is embedded like the others (resized to the model's
    input): said once, with its name, so a mixed-up folder does not pass unnoticed."""
    from PIL import Image

    first = None
    for frame in frames:
        with Image.open(frame.path) as img:
            size = img.size
        if first is None:
            first = size
        elif size != first:
            print(
                f"note: {frame.path} is {size[0]}x{size[1]} while the flight's first frame is {first[0]}x{first[1]}: "
                "resized to the model's input like every frame",
                file=sys.stderr,
            )
            return


def state_summary(points: list[TrackPoint]) -> str:
    """The lost stretches and re-acquisitions of a track, in frame numbers (0-based, time order)."""
    parts, start = [], None
    for i, p in enumerate([*points, None]):
        lost = p is not None and p.state == "lost"
        if lost and start is None:
            start = i
        elif not lost and start is not None:
            parts.append(f"lost at frames {start}-{i - 1}" if i - 1 > start else f"lost at frame {start}")
            start = None
        if p is not None and p.state == "reacquired":
            parts.append(f"re-acquired at frame {i}")
    return "; ".join(parts) if parts else "tracked throughout"


def print_track(flight: FlightTrack, mode: str, truth: list | None) -> None:
    console = Console()
    table = Table(title=f"track ({mode})")
    for col in ("frame", "t (s)", "tile", "lat", "lon", "conf.", "state", "m off"):
        table.add_column(col, justify="left" if col in ("frame", "tile", "state") else "right")
    points = flight.chosen(mode)
    for i, (frame, point) in enumerate(zip(flight.frames, points, strict=True)):
        off = "-"
        if truth and truth[i] is not None:
            off = f"{haversine_m(truth[i], (point.lat, point.lon)):.0f}"
        tile = point.tile + (" *" if point.overrode_top1 else "")
        table.add_row(
            frame.path.name,
            f"{frame.time_s:.1f}",
            tile,
            f"{point.lat:.6f}",
            f"{point.lon:.6f}",
            f"{point.confidence:.2f}",
            point.state,
            off,
        )
    console.print(table)
    console.print(f"* the track overrode the frame's own top-1; {mode} track: {state_summary(points)}")


def run_track(
    args: argparse.Namespace, out: Path, settings: RefineSettings | None = None, matcher: Matcher | None = None
) -> int:
    """``--track``: one flight, decoded; track.csv, track.png, strips and (with truth) metrics.json.
    With ``--refine``, each frame's accepted tile is placed at its refined position for the decoder."""
    index = read_index(args.index)
    sigma = args.position_sigma
    if sigma is None:
        placed = [t["latlon"] for t in index.tiles if t.get("latlon")]
        sigma = tile_spacing_m(np.array(placed)) if len(placed) > 1 else MOTION.position_sigma_m
    motion = MotionModel(
        max_speed_mps=args.max_speed or MOTION.max_speed_mps,
        position_sigma_m=sigma,
        jump_probability=args.jump_probability or MOTION.jump_probability,
        temperature=args.temperature or MOTION.temperature,
    )
    loaded = load_model(args.ckpt, "ckpt")
    writable_folder(out, "--out")
    frames = read_flight(args.photos, args, out)
    note_frame_sizes(frames)
    if args.corrupt_frames is not None:
        frames = corrupt_frames(frames, args.corrupt_frames, args.corruption, out / "corrupted")
    photos = [f.path for f in frames]
    results = localize(
        photos, index, loaded, k=max(args.k or 20, settings.top_n if settings else 0), backend=args.backend
    )
    refined = refine_photos(photos, results, TileStore(index, matcher), settings) if settings else None
    positions = [r.position for r in refined] if refined else None
    flight = decode_flight(frames, results, motion, positions)
    truth = photo_positions(photos, args.coords_csv) if args.coords_csv else None
    if truth is not None:
        add_distances(results, truth)
        metrics = flight_metrics(flight, truth, args.corrupt_frames, positions)
        payload = flight_payload(
            metrics,
            flight,
            index,
            loaded,
            motion,
            args.track,
            args.corrupt_frames,
            args.corruption,
            settings,
            args.matcher,
        )
        write_flight_metrics(out / METRICS, payload)
    write_track_csv(out / TRACK_CSV, track_rows(flight, truth))
    write_track_plot(out / TRACK_PNG, flight, index, truth)
    for i, (photo, matches) in enumerate(zip(photos, results, strict=True)):
        write_strip(photo, matches[:5], out / f"{i:04d}_{photo.stem}.png")
    write_formats(args.format, flight_answers(flight, args.track, index, args.k or 5), out, track=True)
    if args.json:
        rows = []
        for i, (frame, matches, point) in enumerate(zip(frames, results, flight.chosen(args.track), strict=True)):
            row = {
                "photo": str(frame.path),
                "time_s": frame.time_s,
                "matches": [asdict(m) for m in matches],
                "track": {"mode": args.track, **point.to_json()},
            }
            if positions is not None:
                row["refined"] = refined_record(positions[i], truth[i] if truth else None)
            rows.append(row)
        print(json.dumps(rows, indent=1))
    else:
        print_track(flight, args.track, truth)
        written = [TRACK_CSV, TRACK_PNG] + ([METRICS] if truth is not None else [])
        Console().print(f"{', '.join(written)} and strips written to {out}/")
    return 0


def print_tables(
    photos: list[Path], results: list[list[Match]], out: Path, refined: list[RefinedPhoto] | None = None
) -> None:
    console = Console()
    fmt = lambda v: "-" if v is None else f"{v:.6f}"  # noqa: E731
    for i, (photo, matches) in enumerate(zip(photos, results, strict=True)):
        table = Table(title=str(photo))
        for col in ("rank", "tile", "score", "lat", "lon", "metres off"):
            table.add_column(col, justify="right" if col != "tile" else "left")
        for m in matches:
            off = "-" if m.distance_m is None else f"{m.distance_m:.0f}"
            table.add_row(str(m.rank), m.id, f"{m.score:.3f}", fmt(m.lat), fmt(m.lon), off)
        console.print(table)
        if refined is not None:
            p = refined[i].position
            if p.refined:
                console.print(
                    f"refined: {p.lat:.7f}, {p.lon:.7f} in tile {p.tile} (#{p.rank}), {p.inliers} inliers, "
                    f"{p.error_px:.1f} px"
                )
            else:
                console.print(f"not refined: the top-1 tile's centre; {p.reason}")
    console.print(f"strips written to {out}/")


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import_plugins(args.plugins, "--plugins")
    out = Path(args.out).expanduser()
    writable_folder(out, "--out", create=False)  # before any work: a file in the way, no permission, a read-only disk
    check_track_options(args)
    settings = refine_settings(args)
    matcher = build_matcher(args.matcher, args.matcher_weights) if settings else None
    if args.track:
        return run_track(args, out, settings, matcher)
    videos = [p for p in args.photos if is_video(Path(p))]
    if videos:
        raise MeanGeoError(f"{videos[0]}: a video is a flight's frames; localize it with --track")
    photos = list_images(args.photos, "photos")
    index = read_index(args.index)
    results = localize(
        photos, index, args.ckpt, k=max(args.k or 5, settings.top_n if settings else 0), backend=args.backend
    )
    truth = photo_positions(photos, args.coords_csv) if args.coords_csv else None
    if truth is not None:
        add_distances(results, truth)
    writable_folder(out, "--out")
    refined = (
        refine_photos(photos, results, TileStore(index, matcher), settings, keep_images=True) if settings else None
    )
    for i, (photo, matches) in enumerate(zip(photos, results, strict=True)):
        write_strip(photo, matches[: args.k or 5], out / f"{i:04d}_{photo.stem}.png")
        if refined is not None:
            draw_inliers(refined[i], out / f"{i:04d}_{photo.stem}_matches.png")
    positions = [r.position for r in refined] if refined is not None else None
    write_formats(args.format, photo_answers(photos, results, index, args.k or 5, positions), out)
    if args.json:
        rows = []
        for i, (p, ms) in enumerate(zip(photos, results, strict=True)):
            row = {"photo": str(p), "matches": [asdict(m) for m in ms[: args.k or 5]]}
            if refined is not None:
                row["refined"] = refined_record(refined[i].position, truth[i] if truth else None)
            rows.append(row)
        print(json.dumps(rows, indent=1))
    else:
        print_tables(photos, results, out, refined)
    return 0


def write_formats(formats: list[str], answers: list[PhotoAnswer], out: Path, track: bool = False) -> None:
    """``--format``: the answers as ``<out>/localized.<suffix>``, one file per format."""
    for fmt in dict.fromkeys(formats):
        path = out / f"localized{SUFFIX[fmt]}"
        atomic.write_text(path, render(fmt, answers, track=track))
        print(f"wrote {path}", file=sys.stderr)


def refined_record(position: RefinedPosition, truth: tuple[float, float] | None) -> dict:
    """A photo's refinement as ``--json`` gives it (with the metres off where the truth is known)."""
    record = {
        "lat": position.lat,
        "lon": position.lon,
        "refined": position.refined,
        "reason": position.reason,
        "tile": position.tile,
        "rank": position.rank,
        "inliers": position.inliers,
        "error_px": position.error_px,
        "reranked": position.order,
    }
    if truth is not None and position.lat is not None:
        record["distance_m"] = haversine_m(truth, (position.lat, position.lon))
    return record


if __name__ == "__main__":
    sys.exit(main())
