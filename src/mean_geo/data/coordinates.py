"""Coordinates files: ``path,lat,lon`` (an image per row) or ``place,lat,lon`` (a place id per row,
e.g. University-1652's building ids, or the ``coordinates.csv`` a synthetic world writes), or
DenseUAV's GPS file (``Dense_GPS_ALL.txt``: a place per line).
Read with one clear error per wrong header or bad number."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TypeVar

from mean_geo.data.numbers import is_latlon, parse_finite
from mean_geo.errors import DatasetLayoutError

Coords = tuple[float, float]
KEYS = ("path", "place")
T = TypeVar("T")


def read_coordinates_csv(path: str | Path) -> tuple[str, dict[str, Coords]]:
    """``(key column, {key as written: (lat, lon)})``; a DenseUAV GPS file (``Dense_GPS_ALL.txt``, a
    ``.txt``) is read as the place table it is."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: coordinates CSV not found")
    if path.suffix.lower() == ".txt":
        from mean_geo.data.denseuav import read_gps

        return "place", {place: (gps.lat, gps.lon) for place, gps in read_gps(path).items()}
    out: dict[str, Coords] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = set(reader.fieldnames or ())
        key = next((k for k in KEYS if {k, "lat", "lon"} <= fields), None)
        if key is None:
            raise DatasetLayoutError(
                f"{path}: expected a header 'path,lat,lon' or 'place,lat,lon', got {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            lat, lon = parse_finite(row["lat"]), parse_finite(row["lon"])
            if lat is None or lon is None:
                raise DatasetLayoutError(f"{path}:{line}: lat/lon are not finite numbers ({row})")
            if not is_latlon(lat, lon):
                raise DatasetLayoutError(f"{path}:{line}: ({lat}, {lon}) is not a latitude/longitude")
            out[row[key]] = (lat, lon)
    return key, out


def photo_row(table: dict[str, T], photo: Path) -> T | None:
    """A photo's entry in a ``path,…`` table: by the path as given, as an absolute path, or by its
    file name (the first that the table has)."""
    for key in (str(photo), str(photo.resolve()), photo.name):
        if key in table:
            return table[key]
    return None


def read_ground_sizes(path: str | Path) -> dict[str, float]:
    """``{key: metres per pixel}`` from a coordinates CSV's optional ``m_per_px`` column (north-up
    tiles of that ground size per pixel; empty cells and files without the column give nothing)."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".txt":
        return {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if "m_per_px" not in (reader.fieldnames or ()):
            return {}
        key = next(k for k in KEYS if k in (reader.fieldnames or ()))
        out = {}
        for line, row in enumerate(reader, start=2):
            text = (row.get("m_per_px") or "").strip()
            if not text:
                continue
            value = parse_finite(text)
            if value is None or value <= 0:
                raise DatasetLayoutError(f"{path}:{line}: m_per_px '{text}' is not a positive number")
            out[row[key]] = value
    return out


def write_place_coordinates(path: Path, places: dict[str, Coords]) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["place", "lat", "lon"])
        for place, (lat, lon) in sorted(places.items()):
            out.writerow([place, f"{lat:.7f}", f"{lon:.7f}"])
