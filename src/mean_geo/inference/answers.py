"""What ``localize`` (and the app) answer for each photo, in the shape the map formats write
(:mod:`mean_geo.localization.formats`): the position, what supports it, the top-k tiles' footprints."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from mean_geo.errors import MeanGeoError
from mean_geo.inference.flight import FlightTrack
from mean_geo.inference.localization import Match
from mean_geo.localization.formats import LatLon, PhotoAnswer, TileAnswer
from mean_geo.localization.geometry import TileGeometry
from mean_geo.localization.refine import RefinedPosition
from mean_geo.retrieval.index_store import GalleryIndex


class Footprints:
    """Tile footprints (corners as lat/lon) from the index's geometry and each tile file's size,
    each tile's computed once."""

    def __init__(self, index: GalleryIndex) -> None:
        self.by_path = {str(t["path"]): t for t in index.tiles}
        self._found: dict[str, list[LatLon] | None] = {}

    def __call__(self, path: str) -> list[LatLon] | None:
        if path not in self._found:
            self._found[path] = self._footprint(path)
        return self._found[path]

    def _footprint(self, path: str) -> list[LatLon] | None:
        tile = self.by_path.get(path)
        if tile is None or not tile.get("geometry") or not Path(path).is_file():
            return None
        try:
            geometry = TileGeometry.from_list(tile["geometry"], path)
            with Image.open(path) as img:
                width, height = img.size
        except (MeanGeoError, OSError):
            return None
        corners = [(-0.5, -0.5), (width - 0.5, -0.5), (width - 0.5, height - 0.5), (-0.5, height - 0.5)]
        return [geometry.to_latlon(c, r) for c, r in corners]


def tile_answers(matches: list[Match], footprints: Footprints) -> list[TileAnswer]:
    return [TileAnswer(m.rank, m.id, m.score, m.lat, m.lon, footprints(m.path)) for m in matches]


def photo_answer(
    photo: Path, matches: list[Match], footprints: Footprints, refined: RefinedPosition | None = None
) -> PhotoAnswer:
    """One photo: refined where refinement placed it, else its top-1 tile's centre."""
    top = matches[0]
    answer = PhotoAnswer(str(photo), top.lat, top.lon, "top1", top.score, tiles=tile_answers(matches, footprints))
    if refined is not None:
        answer.reason = "" if refined.refined else refined.reason
        if refined.refined and refined.lat is not None and refined.lon is not None:
            answer.lat, answer.lon, answer.source = refined.lat, refined.lon, "refined"
            answer.inliers, answer.error_px = refined.inliers, refined.error_px
    return answer


def photo_answers(
    photos: list[Path],
    results: list[list[Match]],
    index: GalleryIndex,
    k: int,
    refined: list[RefinedPosition] | None = None,
) -> list[PhotoAnswer]:
    """Every photo's answer (its top ``k`` tiles with footprints)."""
    footprints = Footprints(index)
    return [
        photo_answer(photo, matches[:k], footprints, refined[i] if refined else None)
        for i, (photo, matches) in enumerate(zip(photos, results, strict=True))
    ]


def flight_answers(flight: FlightTrack, mode: str, index: GalleryIndex, k: int) -> list[PhotoAnswer]:
    """A flight's frames where the ``mode`` decoder put them, in time order."""
    footprints = Footprints(index)
    out = []
    for frame, matches, point in zip(flight.frames, flight.matches, flight.chosen(mode), strict=True):
        answer = PhotoAnswer(
            str(frame.path),
            point.lat,
            point.lon,
            "track",
            matches[0].score,
            confidence=point.confidence,
            time_s=frame.time_s,
            tiles=tile_answers(matches[:k], footprints),
        )
        out.append(answer)
    return out
