"""DenseUAV (Dai et al., TIP 2024) as it unpacks: dense places, three drone heights, GPS per place.

::

    <root>/Dense_GPS_ALL.txt          one line a place: <path>/<id>/H80.tif E<lon> N<lat> <height>
    <root>/Dense_GPS_train.txt, Dense_GPS_test.txt   (the same lines, split; ALL = their concatenation)
    <root>/train/drone/<6-digit id>/{H80,H90,H100}.JPG
    <root>/train/satellite/<id>/{H80,H90,H100,H80_old,H90_old,H100_old}.tif
    <root>/test/{query_drone,gallery_drone}/<id>/H*.JPG, test/{query_satellite,gallery_satellite}/<id>/*.tif

The GPS lines put the longitude first (``E...``), whatever the dataset's README says; only the
place id (the path's folder) and the two numbers are read.  The test galleries hold all 3,033
places, the 2,256 training places included (distractors).  ``heights`` chooses the drone photos
(queries and training drones); every satellite tile of a place stays, as the official test keeps
them all.  Training pairs a drone photo with the tile cut for its height (``H80.JPG`` with
``H80.tif``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mean_geo.data.layouts import (
    U1652_TEST,
    ImageRecord,
    TrainSplit,
    parse_heights_choice,
    require_dir,
    scan_view_folder,
)
from mean_geo.data.numbers import is_latlon, parse_finite
from mean_geo.errors import DatasetLayoutError

HEIGHTS = (80, 90, 100)
GPS_ALL, GPS_TRAIN, GPS_TEST = "Dense_GPS_ALL.txt", "Dense_GPS_train.txt", "Dense_GPS_test.txt"
TEST_FOLDERS = U1652_TEST  # query_drone, gallery_satellite, query_satellite, gallery_drone
NAME = "DenseUAV"


def parse_heights(heights: int | str | Sequence[int] | None) -> tuple[int, ...]:
    """``80`` / ``"80"`` / ``[80, 100]`` / ``"all"`` / ``None`` (= all) → the drone heights (m), sorted."""
    return tuple(sorted(set(parse_heights_choice(heights, HEIGHTS, "dataset.heights"))))


def height_of(path: Path) -> int | None:
    """The height in a DenseUAV file name (``H90.JPG``, ``H90_old.tif`` → 90), None if it has none."""
    stem = path.stem.split("_")[0]
    if stem[:1] in ("H", "h") and stem[1:].isdigit():
        return int(stem[1:])
    return None


def resolve_root(root: str | Path) -> Path:
    """The DenseUAV folder: the one holding ``train/``, ``test/`` and the GPS files."""
    root = Path(root).expanduser()
    if root.is_file():
        raise DatasetLayoutError(f"{root}: is a file; expected the {NAME} folder (train/, test/, {GPS_ALL})")
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: dataset root does not exist; expected the {NAME} folder")
    for marker in ("train", "test"):
        if not (root / marker).is_dir():
            raise DatasetLayoutError(f"{root}: no '{marker}' folder; expected the {NAME} root that contains it")
    return root


def _drone(records: list[ImageRecord], heights: tuple[int, ...], folder: Path) -> list[ImageRecord]:
    out = []
    for r in records:
        h = height_of(r.path)
        if h not in HEIGHTS:
            raise DatasetLayoutError(f"{r.path}: expected a drone photo named H80.JPG, H90.JPG or H100.JPG")
        if h in heights:
            out.append(ImageRecord(r.path, r.location, "drone", h))
    if not out:
        raise DatasetLayoutError(f"{folder}: no drone photos at heights {list(heights)} (H<height>.JPG)")
    return out


def _satellite(records: list[ImageRecord]) -> list[ImageRecord]:
    return [ImageRecord(r.path, r.location, "satellite", height_of(r.path)) for r in records]


def read_train(root: str | Path, heights: tuple[int, ...] = HEIGHTS) -> TrainSplit:
    """``train/{drone,satellite}/<id>/``: every place needs both views."""
    base = resolve_root(root) / "train"
    drone = _drone(scan_view_folder(base / "drone", "drone"), heights, base / "drone")
    sat = _satellite(scan_view_folder(base / "satellite", "satellite"))
    only_drone = sorted({r.location for r in drone} - {r.location for r in sat})[:3]
    only_sat = sorted({r.location for r in sat} - {r.location for r in drone})[:3]
    if only_drone or only_sat:
        raise DatasetLayoutError(
            f"{base}: drone and satellite places differ (only drone: {only_drone}, only satellite: {only_sat}); "
            "every training place needs both"
        )
    return TrainSplit(drone, sat)


def read_test(root: str | Path, folder: str, heights: tuple[int, ...] = HEIGHTS) -> list[ImageRecord]:
    """``test/<folder>/<id>/`` (drone folders at the chosen heights)."""
    if folder not in TEST_FOLDERS:
        raise DatasetLayoutError(f"unknown test folder '{folder}'; expected one of {sorted(TEST_FOLDERS)}")
    path = require_dir(resolve_root(root) / "test" / folder, f"{NAME}'s test/{folder}/<place id>/")
    records = scan_view_folder(path, TEST_FOLDERS[folder])
    return _drone(records, heights, path) if TEST_FOLDERS[folder] == "drone" else _satellite(records)


def train_pairs(split: TrainSplit) -> list[tuple[Path, Path, int]]:
    """Each drone photo with the satellite tile cut for its height (``H80.JPG`` ↔ ``H80.tif``), else
    the place's first tile."""
    tiles: dict[tuple[str, int | None], Path] = {}
    first: dict[str, Path] = {}
    for r in split.satellite:
        if not r.path.stem.endswith("_old"):
            tiles.setdefault((r.location, r.altitude), r.path)
        first.setdefault(r.location, r.path)
    label_of = split.label_of
    return [(r.path, tiles.get((r.location, r.altitude), first[r.location]), label_of[r.location]) for r in split.drone]


@dataclass(frozen=True)
class PlaceGPS:
    """A place's position as its GPS line gives it."""

    lat: float
    lon: float
    height: float


def _number(token: str, prefix: str, path: Path, line: int, what: str) -> float:
    if not token.upper().startswith(prefix):
        raise DatasetLayoutError(f"{path}:{line}: expected {what} as {prefix}<degrees>, got {token!r}")
    number = parse_finite(token[1:])
    if number is None:
        raise DatasetLayoutError(f"{path}:{line}: {what} {token!r} is not a finite number")
    return number


def read_gps(path: str | Path) -> dict[str, PlaceGPS]:
    """``{place id: PlaceGPS}`` from a DenseUAV GPS file, each bad line named by file and line.

    A line is ``<path>/<id>/H80.tif E<lon> N<lat> <height>``; the path may be absolute or relative.
    """
    path = Path(path)
    places: dict[str, PlaceGPS] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetLayoutError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DatasetLayoutError(f"{path}: not a text file; expected {NAME}'s GPS lines") from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        fields = text.split()
        if len(fields) != 4:
            raise DatasetLayoutError(
                f"{path}:{number}: expected '<path>/<place id>/H80.tif E<lon> N<lat> <height>', got {text.strip()!r}"
            )
        parts = fields[0].replace("\\", "/").split("/")
        place = parts[-2] if len(parts) >= 2 else ""
        if not place:
            raise DatasetLayoutError(f"{path}:{number}: {fields[0]!r} names no place folder (<path>/<id>/H80.tif)")
        lon = _number(fields[1], "E", path, number, "the longitude")
        lat = _number(fields[2], "N", path, number, "the latitude")
        height = parse_finite(fields[3], 0)
        if height is None:
            raise DatasetLayoutError(f"{path}:{number}: the height {fields[3]!r} is not a finite number of metres >= 0")
        if not is_latlon(lat, lon):
            raise DatasetLayoutError(f"{path}:{number}: (lat {lat}, lon {lon}) is not a position")
        if place in places and (places[place].lat, places[place].lon) != (lat, lon):
            raise DatasetLayoutError(f"{path}:{number}: place {place} has a second, different position")
        places[place] = PlaceGPS(lat, lon, height)
    if not places:
        raise DatasetLayoutError(f"{path}: no GPS lines; expected one per place")
    return places


def read_place_gps(root: str | Path) -> dict[str, PlaceGPS]:
    """Every place's position: ``Dense_GPS_ALL.txt``, else the train and test files together."""
    root = Path(root).expanduser()
    if (root / GPS_ALL).is_file():
        return read_gps(root / GPS_ALL)
    parts = [root / GPS_TRAIN, root / GPS_TEST]
    if all(p.is_file() for p in parts):
        return {**read_gps(parts[0]), **read_gps(parts[1])}
    raise DatasetLayoutError(f"{root}: no {GPS_ALL} (nor {GPS_TRAIN} + {GPS_TEST}); {NAME} ships it beside train/")
