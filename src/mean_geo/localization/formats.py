"""Answers a map program opens: GeoJSON, KML, GPX, CSV and JSON of where the photos were taken.

Each photo's answer is its estimated position — refined where refinement placed it, else its
top-1 tile's centre; on a flight, the decoded track's — with what supports it (the retrieval
score, the inliers and reprojection error of a refinement, the track decoder's confidence), and
its top-k tiles with their scores and ground footprints (the tile's corners through its pixel →
ground map).  A flight is also one line through its frames in time order.

Writers only (standard library): GeoJSON (RFC 7946: longitude first) is JSON, KML 2.2 and GPX 1.1
are XML; the tests parse every format back with the geojson package, shapely, fastkml and gpxpy.
"""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

FORMATS = ("table", "json", "geojson", "kml", "gpx", "csv")
SUFFIX = {"geojson": ".geojson", "kml": ".kml", "gpx": ".gpx", "csv": ".csv", "json": ".json"}
KML_NS = "http://www.opengis.net/kml/2.2"
GPX_NS = "http://www.topografix.com/GPX/1/1"

LatLon = tuple[float, float]


@dataclass
class TileAnswer:
    """One of a photo's top-k tiles."""

    rank: int
    tile: str
    score: float
    lat: float | None = None
    lon: float | None = None
    #: the tile's corners (lat, lon), clockwise from the top-left, where its ground geometry is known
    footprint: list[LatLon] | None = None


@dataclass
class PhotoAnswer:
    """Where one photo was taken, as far as mean_geo can tell.

    Attributes:
        photo: its file.
        lat: the estimated latitude (None: no tile of its top-k has coordinates).
        lon: the estimated longitude.
        source: ``refined`` (placed inside a verified tile), ``top1`` (the best tile's centre) or
            ``track`` (the flight decoder's choice).
        score: the top-1 tile's retrieval score (cosine similarity).
        inliers: a refinement's homography inliers (0 when not refined).
        error_px: its reprojection error.
        confidence: the track decoder's probability of its choice (flights only).
        time_s: the frame's time on a flight.
        reason: why a refinement was refused.
        tiles: the top-k.
    """

    photo: str
    lat: float | None
    lon: float | None
    source: str
    score: float
    inliers: int = 0
    error_px: float | None = None
    confidence: float | None = None
    time_s: float | None = None
    reason: str = ""
    tiles: list[TileAnswer] = field(default_factory=list)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _placed(answers: Sequence[PhotoAnswer]) -> list[PhotoAnswer]:
    return [a for a in answers if _finite(a.lat) and _finite(a.lon)]


def _properties(answer: PhotoAnswer) -> dict:
    return {k: v for k, v in asdict(answer).items() if k not in ("lat", "lon", "tiles")}


def to_geojson(answers: Sequence[PhotoAnswer], track: bool = False) -> dict:
    """A FeatureCollection: a Point per photo, a Polygon (or Point) per top-k tile, and on a flight
    a LineString through the frames (GeoJSON coordinates are longitude, latitude)."""
    features = []
    for i, answer in enumerate(answers):
        if _finite(answer.lat) and _finite(answer.lon):
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [answer.lon, answer.lat]},
                    "properties": {"kind": "position", "index": i, **_properties(answer)},
                }
            )
        for tile in answer.tiles:
            props = {"kind": "tile", "photo": answer.photo, "rank": tile.rank, "tile": tile.tile, "score": tile.score}
            if tile.footprint:
                ring = [[lon, lat] for lat, lon in tile.footprint]
                geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
            elif _finite(tile.lat) and _finite(tile.lon):
                geometry = {"type": "Point", "coordinates": [tile.lon, tile.lat]}
            else:
                continue
            features.append({"type": "Feature", "geometry": geometry, "properties": props})
    placed = _placed(answers)
    if track and len(placed) >= 2:
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[a.lon, a.lat] for a in placed]},
                "properties": {"kind": "track", "frames": len(placed)},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _sub(parent: ET.Element, tag: str, text: str | None = None, ns: str = KML_NS) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        element.text = text
    return element


def _kml_data(placemark: ET.Element, values: dict) -> None:
    data = _sub(placemark, "ExtendedData")
    for key, value in values.items():
        if value is None or value == "":
            continue
        item = _sub(data, "Data")
        item.set("name", key)
        _sub(item, "value", str(value))


def to_kml(answers: Sequence[PhotoAnswer], track: bool = False, name: str = "mean_geo") -> str:
    """KML 2.2: a Placemark (Point) per photo, one (Polygon) per top-k tile footprint, a LineString
    for a flight; the numbers in each Placemark's ExtendedData."""
    ET.register_namespace("", KML_NS)
    root = ET.Element(f"{{{KML_NS}}}kml")
    document = _sub(root, "Document")
    _sub(document, "name", name)
    for answer in answers:
        if _finite(answer.lat) and _finite(answer.lon):
            placemark = _sub(document, "Placemark")
            _sub(placemark, "name", answer.photo.rsplit("/", 1)[-1])
            _kml_data(placemark, _properties(answer))
            point = _sub(placemark, "Point")
            _sub(point, "coordinates", f"{answer.lon:.9f},{answer.lat:.9f}")
        for tile in answer.tiles:
            if not tile.footprint:
                continue
            placemark = _sub(document, "Placemark")
            _sub(placemark, "name", f"{tile.tile} (#{tile.rank})")
            _kml_data(placemark, {"photo": answer.photo, "rank": tile.rank, "tile": tile.tile, "score": tile.score})
            polygon = _sub(placemark, "Polygon")
            ring = _sub(_sub(polygon, "outerBoundaryIs"), "LinearRing")
            corners = [*tile.footprint, tile.footprint[0]]
            _sub(ring, "coordinates", " ".join(f"{lon:.9f},{lat:.9f}" for lat, lon in corners))
    placed = _placed(answers)
    if track and len(placed) >= 2:
        placemark = _sub(document, "Placemark")
        _sub(placemark, "name", "track")
        line = _sub(placemark, "LineString")
        _sub(line, "coordinates", " ".join(f"{a.lon:.9f},{a.lat:.9f}" for a in placed))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def to_gpx(answers: Sequence[PhotoAnswer], track: bool = False, name: str = "mean_geo") -> str:
    """GPX 1.1: a waypoint per photo (its file as name, how it was placed as description) and, for a
    flight, a track through the frames (GPX has no polygons: tile footprints are GeoJSON's and KML's)."""
    ET.register_namespace("", GPX_NS)
    root = ET.Element(f"{{{GPX_NS}}}gpx", {"version": "1.1", "creator": name})
    placed = _placed(answers)
    for answer in placed:
        point = _sub(root, "wpt", ns=GPX_NS)
        point.set("lat", f"{answer.lat:.9f}")
        point.set("lon", f"{answer.lon:.9f}")
        _sub(point, "name", answer.photo.rsplit("/", 1)[-1], ns=GPX_NS)
        support = f"{answer.source}, score {answer.score:.4f}"
        if answer.inliers:
            support += f", {answer.inliers} inliers"
        if answer.confidence is not None:
            support += f", confidence {answer.confidence:.3f}"
        _sub(point, "desc", support, ns=GPX_NS)
    if track and len(placed) >= 2:
        trk = _sub(root, "trk", ns=GPX_NS)
        _sub(trk, "name", "track", ns=GPX_NS)
        segment = _sub(trk, "trkseg", ns=GPX_NS)
        for answer in placed:
            point = _sub(segment, "trkpt", ns=GPX_NS)
            point.set("lat", f"{answer.lat:.9f}")
            point.set("lon", f"{answer.lon:.9f}")
            _sub(point, "name", answer.photo.rsplit("/", 1)[-1], ns=GPX_NS)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


CSV_COLUMNS = [
    "photo",
    "lat",
    "lon",
    "source",
    "score",
    "inliers",
    "error_px",
    "confidence",
    "time_s",
    "top1_tile",
    "reason",
]


def to_csv(answers: Sequence[PhotoAnswer], track: bool = False) -> str:
    """One row per photo: its position, how it was placed, and its top-1 tile."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS)
    writer.writeheader()
    for a in answers:
        row = {k: v for k, v in _properties(a).items() if k in CSV_COLUMNS}
        row.update(lat=a.lat, lon=a.lon, top1_tile=a.tiles[0].tile if a.tiles else "")
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def to_json(answers: Sequence[PhotoAnswer], track: bool = False) -> str:
    return json.dumps([asdict(a) for a in answers], indent=1) + "\n"


WRITERS: dict[str, Callable[..., str]] = {
    "geojson": lambda answers, track=False: json.dumps(to_geojson(answers, track), indent=1) + "\n",
    "kml": to_kml,
    "gpx": to_gpx,
    "csv": to_csv,
    "json": to_json,
}


def render(fmt: str, answers: Sequence[PhotoAnswer], track: bool = False) -> str:
    """The answers as the text of one file format (:data:`SUFFIX`)."""
    if fmt not in WRITERS:
        raise ValueError(f"format {fmt!r}: expected one of {sorted(WRITERS)}")
    return WRITERS[fmt](answers, track=track)
