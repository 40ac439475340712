"""What ``localize --track`` writes: the track as CSV (both decoders, every frame), the picture, and
``metrics.json`` where the frames' true positions are known."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mean_geo.data.coordinates import Coords
from mean_geo.inference.flight import FlightTrack
from mean_geo.inference.loading import InferenceModel
from mean_geo.localization.refine import RefineSettings
from mean_geo.localization.track import MotionModel
from mean_geo.localization.track_metrics import track_fingerprint
from mean_geo.localization.track_plot import plot_track
from mean_geo.reporting.run_file import finite_or_none, write_run_file
from mean_geo.retrieval.index_store import GalleryIndex
from mean_geo.utils import atomic

TRACK_CSV, TRACK_PNG, METRICS = "track.csv", "track.png", "metrics.json"


def track_rows(flight: FlightTrack, truth: list[Coords | None] | None = None) -> list[dict]:
    """One row per frame: its top-1, both decoders' estimates and, where known, the truth."""
    rows = []
    for i, frame in enumerate(flight.frames):
        top = flight.matches[i][0]
        row = {"frame": frame.path.name, "time_s": f"{frame.time_s:.3f}", "top1_tile": top.id}
        row.update(top1_lat=f"{top.lat:.7f}", top1_lon=f"{top.lon:.7f}", top1_score=f"{top.score:.4f}")
        for mode in ("online", "offline"):
            p = flight.chosen(mode)[i]
            row.update(
                {
                    f"{mode}_lat": f"{p.lat:.7f}",
                    f"{mode}_lon": f"{p.lon:.7f}",
                    f"{mode}_tile": p.tile,
                    f"{mode}_confidence": f"{p.confidence:.4f}",
                    f"{mode}_state": p.state,
                    f"{mode}_overrode_top1": str(p.overrode_top1).lower(),
                }
            )
        known = truth[i] if truth else None
        row.update(true_lat=f"{known[0]:.7f}" if known else "", true_lon=f"{known[1]:.7f}" if known else "")
        rows.append(row)
    return rows


def write_track_csv(path: Path, rows: list[dict]) -> Path:
    atomic.write_csv(path, rows)
    return path


def write_track_plot(path: Path, flight: FlightTrack, index: GalleryIndex, truth: list[Coords | None] | None) -> Path:
    tiles = np.array([t["latlon"] for t in index.tiles if t.get("latlon")], dtype=np.float64).reshape(-1, 2)
    top1 = np.array([(ms[0].lat, ms[0].lon) for ms in flight.matches])
    online = np.array([(p.lat, p.lon) for p in flight.online])
    offline = np.array([(p.lat, p.lon) for p in flight.offline])
    known = np.array(truth, dtype=np.float64) if truth and all(t is not None for t in truth) else None
    title = f"{len(flight.frames)} frames, {flight.frames[-1].time_s - flight.frames[0].time_s:.0f} s"
    return plot_track(path, tiles, top1, online, offline, known, title)


def is_synthetic_flight(frame: Path) -> bool:
    """Whether the frame lies in a synthetic flights world (its ``world.json`` says so)."""
    for folder in frame.resolve().parents:
        marker = folder / "world.json"
        if marker.is_file():
            try:
                return json.loads(marker.read_text()).get("layout") == "flights"
            except (OSError, ValueError, AttributeError):
                return False
    return False


def flight_payload(
    metrics: dict[str, float],
    flight: FlightTrack,
    index: GalleryIndex,
    loaded: InferenceModel,
    motion: MotionModel,
    mode: str,
    corrupted: tuple[int, int] | None,
    corruption: str | None,
    refine: RefineSettings | None = None,
    matcher_name: str | None = None,
) -> dict:
    """``metrics.json`` of a flight: its metrics, the protocol fingerprint, what ran and how it went."""
    model = loaded.spec.get("model", {}) if isinstance(loaded.spec, dict) else {}
    settings = asdict(motion)
    fingerprint = track_fingerprint(
        frames=[f.path.name for f in flight.frames],
        tiles=[t["id"] for t in index.tiles],
        image_size=loaded.image_size,
        flip_tta=index.flip_tta,
        candidates=len(flight.matches[0]),
        synthetic=is_synthetic_flight(flight.frames[0].path),
        corrupted=corrupted,
        corruption=corruption,
        refine={"matcher": matcher_name, **asdict(refine)} if refine is not None else None,
    )
    counts = {
        f"{m}_{state}": sum(p.state == state for p in flight.chosen(m))
        for m in ("online", "offline")
        for state in ("lost", "reacquired")
    }
    return {
        "metrics": finite_or_none(metrics, 6),
        "protocol": {"fingerprint": fingerprint, "motion": settings},
        "run": {
            "entry": "localize --track",
            "architecture": model.get("architecture"),
            "backbone": model.get("backbone"),
            "image_size": loaded.image_size,
            "track": mode,
            "overrides": [f"{k}={v}" for k, v in settings.items()],
        },
        "flight": {"frames": len(flight.frames), **counts},
    }


def write_flight_metrics(path: Path, payload: dict) -> Path:
    return write_run_file(path, payload, indent=1)
