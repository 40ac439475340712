"""A flight localized as a track: each frame's matches (:func:`~mean_geo.inference.localization.localize`)
decoded together (:mod:`mean_geo.localization.track`), and measured against the truth where known."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mean_geo.data.coordinates import Coords
from mean_geo.data.corruptions import CORRUPTIONS, condition_seed, corrupt
from mean_geo.data.datasets import load_rgb
from mean_geo.errors import MeanGeoError
from mean_geo.inference.localization import Match
from mean_geo.localization.refine import RefinedPosition
from mean_geo.localization.sequence import SequenceFrame
from mean_geo.localization.track import Frames, MotionModel, Track, decode_both, to_local_m
from mean_geo.localization.track_metrics import error_metrics, frames_to_reacquire
from mean_geo.retrieval.distances import haversine_m

#: what ``--corruption`` may name: the evaluation's weather/camera corruptions at severity 5, or
#: ``static`` (the frame replaced by noise: a camera that gives nothing usable)
STATIC = "static"
FRAME_CORRUPTIONS = (STATIC, *CORRUPTIONS)


@dataclass
class TrackPoint:
    """Where the decoder puts one frame, and how."""

    lat: float
    lon: float
    confidence: float
    #: the decoder chose another tile than the frame's own top-1
    overrode_top1: bool
    #: ``tracking``, ``lost`` or ``reacquired`` (:class:`~mean_geo.localization.track.Track`)
    state: str
    #: the chosen tile and its rank among the frame's matches
    tile: str
    rank: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FlightTrack:
    """A decoded flight: the frames in order, their matches, and both decoders' tracks."""

    frames: list[SequenceFrame]
    matches: list[list[Match]]
    online: list[TrackPoint]
    offline: list[TrackPoint]

    def chosen(self, mode: str) -> list[TrackPoint]:
        return self.offline if mode == "offline" else self.online


def _points(track: Track, matches: list[list[Match]]) -> list[TrackPoint]:
    out = []
    for t, ms in enumerate(matches):
        m = ms[int(track.choice[t])]
        assert m.lat is not None and m.lon is not None  # decode_flight refuses tiles without positions
        out.append(
            TrackPoint(
                float(m.lat),
                float(m.lon),
                round(float(track.confidence[t]), 6),
                bool(track.overrode_top1[t]),
                track.state[t],
                m.id,
                m.rank,
            )
        )
    return out


def decode_flight(
    frames: list[SequenceFrame],
    matches: list[list[Match]],
    motion: MotionModel,
    refined: list[RefinedPosition] | None = None,
) -> FlightTrack:
    """Both decoders over a flight's matches.

    Args:
        frames: the frames, in time order.
        matches: each frame's top-k tiles, best first (all with coordinates).
        motion: the motion and retrieval model.
        refined: each frame's refinement (``--refine``): the decoder sees the refined tile at the
            refined position instead of its centre.

    Returns:
        The flight with its online and offline tracks.

    Raises:
        MeanGeoError: tiles without coordinates (a track needs the tiles' positions).
    """
    unplaced = sorted({m.id for ms in matches for m in ms if m.lat is None or m.lon is None})
    if unplaced:
        raise MeanGeoError(
            f"--track: {len(unplaced)} matched tiles have no coordinates (e.g. {unplaced[0]}); build the index with "
            "--coords-csv, world files or georeferenced tiles so every tile has a position"
        )
    placed = with_refined_positions(matches, refined)
    latlon = np.array([[(m.lat, m.lon) for m in ms] for ms in placed], dtype=np.float64)
    origin = (float(latlon[..., 0].mean()), float(latlon[..., 1].mean()))
    candidates = Frames(
        times_s=np.array([f.time_s for f in frames]),
        positions_m=to_local_m(latlon, origin),
        scores=np.array([[m.score for m in ms] for ms in matches]),
        courses_deg=np.array([f.course_deg for f in frames]),
        altitudes_m=np.array([f.altitude_m for f in frames]),
    )
    online, offline = decode_both(candidates, motion)
    return FlightTrack(frames, matches, _points(online, placed), _points(offline, placed))


def with_refined_positions(results: list[list[Match]], positions: list[RefinedPosition] | None) -> list[list[Match]]:
    """Each frame's matches with the refined tile moved to the refined position (copies: the
    retrieval's own answers stay as they are)."""
    if positions is None:
        return results
    out = []
    for matches, p in zip(results, positions, strict=True):
        out.append([replace(m, lat=p.lat, lon=p.lon) if p.refined and m.rank == p.rank else m for m in matches])
    return out


def corrupt_frames(
    frames: list[SequenceFrame], stretch: tuple[int, int], corruption: str, out: Path
) -> list[SequenceFrame]:
    """The flight with frames ``[start, end)`` replaced by corrupted copies written into ``out``
    (same file names: truth files still find them), deterministic per frame."""
    start, end = stretch
    if not 0 <= start < end <= len(frames):
        raise MeanGeoError(
            f"--corrupt-frames {start}:{end}: expected START:END within the flight's {len(frames)} frames"
        )
    out.mkdir(parents=True, exist_ok=True)
    result = list(frames)
    for i in range(start, end):
        frame = frames[i]
        image = torch.from_numpy(np.asarray(load_rgb(frame.path), dtype=np.float32) / 255.0).permute(2, 0, 1)
        generator = torch.Generator().manual_seed(condition_seed(corruption, 5, i))
        if corruption == STATIC:
            image = torch.rand(image.shape, generator=generator)
        else:
            image = corrupt(image, corruption, 5, generator)
        array = (image.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        target = out / frame.path.with_suffix(".png").name
        Image.fromarray(array).save(target)
        result[i] = SequenceFrame(target, frame.time_s, frame.course_deg, frame.altitude_m)
    return result


def _errors(points: list[tuple[float | None, float | None]], truth: list[Coords]) -> np.ndarray:
    a = torch.tensor(points, dtype=torch.float64)
    b = torch.tensor(truth, dtype=torch.float64)
    return haversine_m(a, b).numpy()


def flight_metrics(
    flight: FlightTrack,
    truth: list[Coords | None],
    corrupted: tuple[int, int] | None = None,
    refined: list[RefinedPosition] | None = None,
) -> dict[str, float]:
    """``test/<flight_top1|flight_refined|flight_online|flight_offline>/<metric>`` over the frames
    with a known truth.

    Args:
        flight: the decoded flight.
        truth: each frame's true position (None where unknown).
        corrupted: the deliberately corrupted stretch ``(start, end)``: adds ``reacquire_frames``.
        refined: each frame's :class:`~mean_geo.localization.refine.RefinedPosition` (``--refine``):
            adds ``flight_refined`` (the refined position, else the top-1 tile's centre) and its
            share of refined frames.

    Returns:
        The metrics, as written into ``metrics.json``.

    Raises:
        MeanGeoError: no frame with a known position.
    """
    known = [i for i, t in enumerate(truth) if t is not None]
    if not known:
        raise MeanGeoError("--coords-csv: no frame of the flight is in it (by path or file name): no metres to compute")
    true = [t for t in truth if t is not None]
    ways: dict[str, list[tuple[float | None, float | None]]] = {
        "flight_top1": [(ms[0].lat, ms[0].lon) for ms in flight.matches],
        **({"flight_refined": [(p.lat, p.lon) for p in refined]} if refined is not None else {}),
        "flight_online": [(p.lat, p.lon) for p in flight.online],
        "flight_offline": [(p.lat, p.lon) for p in flight.offline],
    }
    overrode = {"flight_online": flight.online, "flight_offline": flight.offline}
    metrics: dict[str, float] = {}
    for name, points in ways.items():
        errors = _errors([points[i] for i in known], true)
        values = error_metrics(errors.tolist())
        if name in overrode:
            values["overrode"] = 100.0 * float(np.mean([p.overrode_top1 for p in overrode[name]]))
        if name == "flight_refined" and refined is not None:
            values["refined"] = 100.0 * float(np.mean([p.refined for p in refined]))
        if corrupted is not None and len(known) == len(truth):
            values["reacquire_frames"] = float(frames_to_reacquire(errors.tolist(), corrupted[1]))
        metrics.update({f"test/{name}/{key}": value for key, value in values.items()})
    return metrics
