"""From the tile to the metre: geometric verification of a photo's top-N tiles, re-ranking by
inliers, and the photo's position through the best tile's homography.

For each candidate tile: local features matched (:mod:`mean_geo.localization.matching`), a robust
homography photo → tile (OpenCV's USAC MAGSAC++), and an acceptance test that says why not when it
fails: enough inliers, a small reprojection error, a sane homography (orientation kept, scale and
shear bounded, no vanishing line inside the photo), and the photo's centre landing inside the
tile.  The accepted candidates are re-ranked (``rerank``); the first one's homography carries the
photo's centre pixel into the tile, and the tile's geometry carries it to latitude/longitude.  When
none is accepted, the answer is the retrieval's top-1 tile centre, with the reason: never silent.

Which ground point is "the photo's position": the point the image centre sees.  For a nadir photo
that is below the drone; for an oblique one it is ahead of it, where the optical axis meets the
ground (a homography of flat ground cannot tell the drone's own position without its pitch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mean_geo.errors import MeanGeoError
from mean_geo.localization.geometry import TileGeometry
from mean_geo.localization.matching import Features, Matcher

RERANK = ("inliers", "score")


@dataclass(frozen=True)
class RefineSettings:
    """How refinement decides (recorded with every refined result).

    Attributes:
        top_n: candidates verified per photo.
        min_inliers: fewer inliers is a refusal.
        max_error_px: largest mean reprojection error of the inliers (tile pixels).
        ransac_px: MAGSAC's inlier threshold (tile pixels).
        max_scale: the homography may scale by at most this (and at least its inverse).
        max_anisotropy: the largest ratio of its two local scales (shear, squash).
        rerank: ``inliers`` (accepted candidates by inlier count, then retrieval score) or ``score``
            (the retrieval's order; the first accepted one gives the position).
    """

    top_n: int = 5
    min_inliers: int = 15
    max_error_px: float = 3.0
    ransac_px: float = 3.0
    max_scale: float = 8.0
    max_anisotropy: float = 4.0
    rerank: str = "inliers"

    def __post_init__(self) -> None:
        if self.rerank not in RERANK:
            raise MeanGeoError(f"rerank={self.rerank}: expected one of {', '.join(RERANK)}")
        if self.top_n < 1 or self.min_inliers < 4:
            raise MeanGeoError("top_n must be >= 1 and min_inliers >= 4 (a homography needs 4 points)")


@dataclass
class Verification:
    """One candidate tile checked against the photo."""

    rank: int  # the tile's rank in the retrieval (1 = top-1)
    matches: int
    inliers: int
    accepted: bool
    reason: str  # "accepted", or why not
    error_px: float | None = None
    centre_px: tuple[float, float] | None = None  # the photo's centre in the tile's pixels
    homography: np.ndarray | None = None
    inlier_pairs: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)


def _homography_problem(h: np.ndarray, size: tuple[int, int], settings: RefineSettings) -> str | None:
    """Why ``h`` (photo → tile, ``h[2, 2] = 1``) is not a plausible view of flat ground, or None.
    Scale and shear are read from its Jacobian at the photo's centre."""
    w, hgt = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, hgt - 1, 1], [0, hgt - 1, 1]], dtype=np.float64)
    if np.any(corners @ h[2] <= 1e-9):
        return "the homography puts the horizon inside the photo"
    cx, cy = (w - 1) / 2, (hgt - 1) / 2
    z = h[2, 0] * cx + h[2, 1] * cy + h[2, 2]
    u = (h[0, 0] * cx + h[0, 1] * cy + h[0, 2]) / z
    v = (h[1, 0] * cx + h[1, 1] * cy + h[1, 2]) / z
    jac = np.array([[h[0, 0] - u * h[2, 0], h[0, 1] - u * h[2, 1]], [h[1, 0] - v * h[2, 0], h[1, 1] - v * h[2, 1]]]) / z
    if np.linalg.det(jac) <= 0:
        return "the homography mirrors the photo"
    big, small = np.linalg.svd(jac, compute_uv=False)
    if big / small > settings.max_anisotropy:
        return f"the homography shears the photo ({big / small:.1f}:1)"
    scale = float(np.sqrt(big * small))
    if not 1 / settings.max_scale <= scale <= settings.max_scale:
        return f"the homography scales the photo by {scale:.2g}"
    return None


def verify(photo: Features, tile: Features, matcher: Matcher, settings: RefineSettings, rank: int = 1) -> Verification:
    """Match, fit a homography, and accept or refuse it with its reason.

    Args:
        photo: the photo's features.
        tile: the tile's features.
        matcher: what matches them.
        settings: the thresholds.
        rank: the tile's retrieval rank (carried along).

    Returns:
        The verification; ``centre_px`` is set when a homography was found.
    """
    import cv2

    pa, pb = matcher.match(photo, tile)
    if len(pa) < max(4, settings.min_inliers):
        return Verification(rank, len(pa), 0, False, f"{len(pa)} matches, fewer than {settings.min_inliers}")
    h, mask = cv2.findHomography(pa, pb, cv2.USAC_MAGSAC, settings.ransac_px, maxIters=2000, confidence=0.999)
    if h is None or not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return Verification(rank, len(pa), 0, False, "no homography fits the matches")
    h = h / h[2, 2]
    inl = mask.ravel().astype(bool)
    inliers = int(inl.sum())
    projected = cv2.perspectiveTransform(pa[inl].reshape(-1, 1, 2).astype(np.float64), h).reshape(-1, 2)
    error = float(np.mean(np.linalg.norm(projected - pb[inl], axis=1))) if inliers else float("inf")
    w, hgt = photo.size
    centre = cv2.perspectiveTransform(np.array([[[(w - 1) / 2, (hgt - 1) / 2]]], dtype=np.float64), h)[0, 0]
    found = Verification(
        rank, len(pa), inliers, False, "", error, (float(centre[0]), float(centre[1])), h, (pa[inl], pb[inl])
    )
    tw, th = tile.size
    if inliers < settings.min_inliers:
        found.reason = f"{inliers} inliers, fewer than {settings.min_inliers}"
    elif error > settings.max_error_px:
        found.reason = f"reprojection error {error:.1f} px, above {settings.max_error_px}"
    elif problem := _homography_problem(h, photo.size, settings):
        found.reason = problem
    elif not (-0.5 <= centre[0] <= tw - 0.5 and -0.5 <= centre[1] <= th - 0.5):
        found.reason = "the photo's centre falls outside the tile"
    else:
        found.accepted, found.reason = True, "accepted"
    return found


def accepted_in_order(verifications: list[Verification], rerank: str) -> list[Verification]:
    """The accepted candidates, best first: most inliers first (then the retrieval's rank) for
    ``rerank="inliers"``, the retrieval's order for ``"score"``."""
    accepted = [v for v in verifications if v.accepted]
    if rerank == "inliers":
        accepted.sort(key=lambda v: (-v.inliers, v.rank))
    return accepted


@dataclass
class RefinedPosition:
    """A photo's position after verification, or its top-1 tile's centre with the reason."""

    lat: float | None
    lon: float | None
    refined: bool
    reason: str
    tile: str | None  # the tile the position comes from
    rank: int | None  # its retrieval rank
    inliers: int
    error_px: float | None
    order: list[int]  # retrieval ranks after re-ranking (verified ones; the unverified keep their order)


@dataclass
class Candidate:
    """A retrieved tile as refinement needs it."""

    rank: int
    tile: str
    score: float
    features: Features
    geometry: TileGeometry | None
    centre: tuple[float, float] | None  # its centre's lat/lon, the fallback


def refine(
    photo: Features, candidates: list[Candidate], matcher: Matcher, settings: RefineSettings
) -> tuple[RefinedPosition, list[Verification]]:
    """Verify the candidates, re-rank, and place the photo.

    Args:
        photo: the photo's features.
        candidates: its top tiles, best retrieval first (``settings.top_n`` are verified).
        matcher: what matches.
        settings: thresholds and re-ranking.

    Returns:
        The position and each verified candidate's verification (retrieval order).

    Raises:
        MeanGeoError: a candidate without geometry (refinement needs each tile's pixel → ground map).
    """
    checked = candidates[: settings.top_n]
    unplaced = [c.tile for c in checked if c.geometry is None]
    if unplaced:
        raise MeanGeoError(
            f"--refine: tile {unplaced[0]} has no ground geometry; give the tiles world files or GeoTIFF tags, "
            "slippy-map z/x/y names, or an m_per_px column in the coordinates CSV"
        )
    verifications = [verify(photo, c.features, matcher, settings, c.rank) for c in checked]
    accepted = accepted_in_order(verifications, settings.rerank)
    if settings.rerank == "inliers":
        rest = [v.rank for v in verifications if not v.accepted]
        order = [v.rank for v in accepted] + rest + [c.rank for c in candidates[settings.top_n :]]
    else:
        order = [c.rank for c in candidates]
    if accepted:
        best = accepted[0]
        tile = next(c for c in checked if c.rank == best.rank)
        lat, lon = tile.geometry.to_latlon(*best.centre_px)  # type: ignore[union-attr,misc]
        return RefinedPosition(lat, lon, True, "accepted", tile.tile, tile.rank, best.inliers, best.error_px, order), (
            verifications
        )
    top = candidates[0]
    reasons = "; ".join(f"#{v.rank}: {v.reason}" for v in verifications)
    lat, lon = top.centre if top.centre is not None else (None, None)
    return RefinedPosition(lat, lon, False, f"no tile accepted ({reasons})", top.tile, top.rank, 0, None, order), (
        verifications
    )
