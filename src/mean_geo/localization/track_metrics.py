"""How good a flight's positions are, in metres, and the protocol fingerprint they are written with.

Per flight, for each way of placing a frame (its own top-1 tile, the online filter, the offline
smoother): the mean and median error, the share of frames within 20/50/100 m, and after a
deliberately corrupted stretch of frames the number of frames until the estimate is within
:data:`REACQUIRED_WITHIN_M` again.  The fingerprint follows :mod:`mean_geo.retrieval.protocol`
(one direction, ``flight``, whose queries are the frames), so ``python -m mean_geo.report`` tables
flights beside each other and never beside image-retrieval rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mean_geo.retrieval.protocol import SplitLists, digest, split_hash

THRESHOLDS_M = (20, 50, 100)
REACQUIRED_WITHIN_M = 50.0
#: what each track metric means (written into the fingerprint, as the retrieval metrics are)
TRACK_METRIC_DEFINITIONS: dict[str, str] = {
    "mean_m": "mean over frames of the metres (haversine) from the estimate to the true position",
    "median_m": "median over frames of the same distances",
    "Acc@Tm": "frames whose estimate is within T metres of the true position, %",
    "reacquire_frames": f"frames after the corrupted stretch until the estimate is within {REACQUIRED_WITHIN_M:g} m "
    "(0 = at once; the frames left + 1 when never)",
    "overrode": "frames whose estimate is not the frame's own top-1 tile, %",
}
#: the ways a frame is placed, as metric rows (``test/<convention>/<metric>``)
CONVENTIONS = ("flight_top1", "flight_online", "flight_offline")


def error_metrics(
    errors_m: Sequence[float], thresholds_m: Sequence[int] = THRESHOLDS_M, prefix: str = ""
) -> dict[str, float]:
    """Mean, median and Acc@{T}m (%, default T = 20, 50, 100) of per-frame or per-photo errors
    (metres), each name after ``prefix``."""
    errors = np.asarray(errors_m, dtype=np.float64)
    out = {f"{prefix}mean_m": float(errors.mean()), f"{prefix}median_m": float(np.median(errors))}
    out.update({f"{prefix}Acc@{t}m": float(100.0 * np.mean(errors <= t)) for t in thresholds_m})
    return out


def frames_to_reacquire(errors_m: Sequence[float], stretch_end: int, within_m: float = REACQUIRED_WITHIN_M) -> int:
    """Frames after a corrupted stretch ``[…, stretch_end)`` until the error is within ``within_m``.

    Returns:
        0 when the first frame after the stretch is already within; the number of frames left + 1
        when none is.
    """
    after = np.asarray(errors_m, dtype=np.float64)[stretch_end:]
    hits = np.flatnonzero(after <= within_m)
    return int(hits[0]) if hits.size else int(after.size) + 1


def track_fingerprint(
    *,
    frames: Sequence[str],
    tiles: Sequence[str],
    image_size: int,
    flip_tta: bool,
    candidates: int,
    synthetic: bool,
    corrupted: tuple[int, int] | None,
    corruption: str | None,
    refine: dict | None = None,
) -> dict:
    """What a flight's numbers depend on besides the model and the decoder's settings.

    Args:
        frames: the frames' names (file names: another copy of the flight gives the same).
        tiles: the gallery tiles' ids.
        image_size: the side the model sees.
        flip_tta: whether embeddings add the mirror image's.
        candidates: tiles per frame the decoder chooses among (k).
        synthetic: frames from the synthetic flights.
        corrupted: the deliberately corrupted frames ``(start, end)``, if any.
        corruption: what was done to them.
        refine: the refinement's matcher and settings, when frames were refined (adds the
            ``flight_refined`` rows).

    Returns:
        A JSON-ready dict; ``id`` identifies the whole of it.
    """
    split = SplitLists(queries=list(frames), gallery=list(tiles), ranked_gallery=len(tiles))
    fingerprint = {
        "dataset": "flight",
        "layout": "frames",
        "synthetic": bool(synthetic),
        "altitude": None,
        "image_size": int(image_size),
        "drop_unmatched_gallery": False,
        "flip_tta": bool(flip_tta),
        "metric_definitions": TRACK_METRIC_DEFINITIONS,
        "directions": {
            "flight": {
                "queries": len(frames),
                "gallery": len(tiles),
                "ranked_gallery": len(tiles),
                "split": split_hash(split),
            }
        },
        "conventions": [*CONVENTIONS[:1], *(["flight_refined"] if refine else []), *CONVENTIONS[1:]],
        "track": {
            "candidates": int(candidates),
            "corrupted": list(corrupted) if corrupted else None,
            "corruption": corruption if corrupted else None,
            "reacquired_within_m": REACQUIRED_WITHIN_M,
            **({"refine": refine} if refine else {}),
        },
    }
    fingerprint["id"] = digest(fingerprint)
    return fingerprint
