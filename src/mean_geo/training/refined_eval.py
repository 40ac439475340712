"""Refinement inside the evaluation: every D->S query's top-N tiles verified
(:mod:`mean_geo.localization.refine`), the photo placed inside the accepted tile, and, where the
dataset knows each photo's true ground point (GTA-UAV), retrieval-only and refined metres side by
side in one metric row, ``d2s_refined``:

- ``R@1``: after re-ranking by inliers (the accepted tiles first, most inliers first);
- ``mean_m``, ``median_m``, ``Acc@{5,10,20,50}m``: the refined position (the retrieval's top-1 tile
  centre where no tile was accepted);
- ``retrieval_mean_m``, ``retrieval_median_m``, ``retrieval_Acc@{5,10,20,50}m``: the top-1 tile's
  centre, the same photos;
- ``median_m_correct``, ``retrieval_median_m_correct``: over the photos whose top-1 is a true match;
- ``refined``: the share of photos refined, %.

Every query's answer goes to ``refined_d2s.csv`` (accepted or not, and why), metres or not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mean_geo.localization.matching import MAX_SIDE, Features, Matcher, build_matcher, read_for_matching
from mean_geo.localization.refine import RefineSettings, accepted_in_order, verify
from mean_geo.localization.track_metrics import error_metrics
from mean_geo.retrieval.evaluator import DirectionResult
from mean_geo.utils import atomic

THRESHOLDS_M = (5, 10, 20, 50)
CONVENTION = "d2s_refined"


@dataclass(frozen=True)
class RefineRequest:
    """``eval.refine*`` as checked: the settings and the matcher (built once, weights checked)."""

    settings: RefineSettings
    matcher: str
    matcher_weights: str | None = None

    def build(self) -> Matcher:
        return build_matcher(self.matcher, self.matcher_weights, ("eval.refine_matcher", "eval.refine_matcher_weights"))

    def fingerprint(self) -> dict:
        return {"matcher": self.matcher, "max_side": MAX_SIDE, **asdict(self.settings)}


@dataclass(frozen=True)
class RefinementGround:
    """Ground truth for refinement in one planar frame (metres).

    Each query photo's true point (by path), a tile pixel's ground point
    (``tile_to_ground(name, col, row, width, height)``) and each photo's positive tiles (by path;
    re-ranked R@1 counts them).
    """

    photos: dict[Path, tuple[float, float]]
    tile_to_ground: Callable[[str, float, float, int, int], tuple[float, float]]
    positives: dict[Path, frozenset[str]]

    @classmethod
    def of(cls, direction: DirectionResult, tile_to_ground: Callable | None) -> RefinementGround | None:
        """What an evaluation's queries carried (map metres, positive tiles), with the dataset's
        tile geometry; None where either is missing."""
        query = direction.query
        if tile_to_ground is None or "position_m" not in query.truth:
            return None
        name_of = dict(zip(direction.full_gallery.indices.tolist(), direction.full_gallery.locations, strict=True))
        rows = query.truth["positives"].tolist() if "positives" in query.truth else [[] for _ in query.paths]
        return cls(
            photos={
                p: (float(x), float(y))
                for p, (x, y) in zip(query.paths, query.truth["position_m"].tolist(), strict=True)
            },
            tile_to_ground=tile_to_ground,
            positives={
                p: frozenset(name_of[i] for i in row if i >= 0) for p, row in zip(query.paths, rows, strict=True)
            },
        )


def refine_direction(
    direction: DirectionResult,
    tile_to_ground: Callable | None,
    request: RefineRequest,
    matcher: Matcher,
    stage: str = "test",
) -> tuple[dict[str, float], list[dict]]:
    """Refine every query of one direction of an evaluation.

    Args:
        direction: the evaluator's result (its images, truth and every query's ranking).
        tile_to_ground: the dataset's tile pixel -> map metres, or None (positions in tile pixels only).
        request: the settings and matcher name.
        matcher: the built matcher.
        stage: the metric keys' stage.

    Returns:
        The ``<stage>/d2s_refined/*`` metrics (empty without ground truth) and one row per query.
    """
    settings = request.settings
    ground = RefinementGround.of(direction, tile_to_ground)
    gallery = direction.gallery
    ranked = direction.top[:, : min(settings.top_n, len(gallery.paths))]
    # each tile once: its features, the matching image's scale, and the file's own size
    tiles: dict[int, tuple[Features, tuple[float, float], tuple[int, int]]] = {}
    rows, refined_err, retrieval_err, correct, reranked_hits = [], [], [], [], []
    for qi, query_path in enumerate(direction.query.paths):
        image, _, _ = read_for_matching(query_path, MAX_SIDE)
        photo = matcher.features(image)
        checks = []
        for rank, gi in enumerate(ranked[qi].tolist(), start=1):
            if gi not in tiles:
                tile_image, sx, sy = read_for_matching(gallery.paths[gi], MAX_SIDE)
                with Image.open(gallery.paths[gi]) as img:
                    tiles[gi] = (matcher.features(tile_image), (sx, sy), img.size)
            checks.append(verify(photo, tiles[gi][0], matcher, settings, rank))
        accepted = accepted_in_order(checks, settings.rerank)
        top_gi = int(ranked[qi, 0])
        chosen = (int(ranked[qi, accepted[0].rank - 1]), accepted[0]) if accepted else None
        row = {
            "query": str(query_path),
            "top1_tile": gallery.locations[top_gi],
            "refined": chosen is not None,
            "tile": gallery.locations[chosen[0]] if chosen else gallery.locations[top_gi],
            "inliers": chosen[1].inliers if chosen else 0,
            "reason": "accepted" if chosen else "; ".join(f"#{v.rank}: {v.reason}" for v in checks),
            "tile_col": "",
            "tile_row": "",
        }
        if chosen:
            gi, v = chosen
            # the photo's centre in the tile file's own pixels (the matching image may be smaller)
            col, row_px = ((v.centre_px[k] + 0.5) / tiles[gi][1][k] - 0.5 for k in (0, 1))
            row.update(tile_col=f"{col:.2f}", tile_row=f"{row_px:.2f}")
            # where the error browser marks it: the gallery item, and shares of its width and height
            row["_mark"] = (gi, *(round((p + 0.5) / n, 4) for p, n in zip((col, row_px), tiles[gi][2], strict=True)))
        if ground is not None and query_path in ground.photos:
            truth = np.array(ground.photos[query_path])
            top_tile = gallery.locations[top_gi]
            width, height = tiles[top_gi][2]
            centre = np.array(ground.tile_to_ground(top_tile, (width - 1) / 2, (height - 1) / 2, width, height))
            if chosen is not None:
                point = np.array(ground.tile_to_ground(gallery.locations[gi], col, row_px, *tiles[gi][2]))
            else:
                point = centre
            refined_err.append(float(np.linalg.norm(point - truth)))
            retrieval_err.append(float(np.linalg.norm(centre - truth)))
            positives = ground.positives.get(query_path, frozenset())
            correct.append(top_tile in positives)
            first = chosen[0] if chosen is not None and settings.rerank == "inliers" else top_gi
            reranked_hits.append(gallery.locations[first] in positives)
            row.update(east_m=f"{point[0]:.2f}", south_m=f"{point[1]:.2f}", error_m=f"{refined_err[-1]:.2f}")
            row["retrieval_error_m"] = f"{retrieval_err[-1]:.2f}"
        rows.append(row)
    if not refined_err:
        return {}, rows
    refined, retrieval, right = np.array(refined_err), np.array(retrieval_err), np.array(correct)
    metrics = {
        "R@1": 100.0 * float(np.mean(reranked_hits)),
        **error_metrics(refined_err, THRESHOLDS_M),
        **error_metrics(retrieval_err, THRESHOLDS_M, prefix="retrieval_"),
    }
    if right.any():
        metrics["median_m_correct"] = float(np.median(refined[right]))
        metrics["retrieval_median_m_correct"] = float(np.median(retrieval[right]))
    metrics["refined"] = 100.0 * float(np.mean([r["refined"] for r in rows]))
    return {f"{stage}/{CONVENTION}/{k}": v for k, v in metrics.items()}, rows


def write_refined_rows(path: Path, rows: list[dict]) -> None:
    atomic.write_csv(path, [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
