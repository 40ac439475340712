"""DenseUAV's own position metrics (its ``evaluateDistance.py``), named apart from Game4Loc's.

- ``DenseUAV_SDM@K`` = mean over queries of ``Σ_{i≤K} w_i·exp(−s·d_i) / Σ w_i``, ``w_i = K−i+1``,
  ``s = 5000``, with ``d_i`` the plain Euclidean distance **in degrees** between the (lon, lat) of
  the query's place and of the i-th retrieved item (no cos(lat) factor), K = 1, 3, 5, 10, in %.
  Game4Loc's ``SDM@K`` (:mod:`mean_geo.retrieval.distances`) uses metres and ``s = 0.001``: the
  same formula on another scale, so the two never share a name.
- ``DenseUAV_MA@Tm`` = share of queries whose top-1 item lies within T metres (haversine on a
  sphere of radius 6,378.137 km, as DenseUAV computes it), in %.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mean_geo.retrieval.distances import haversine_m, sdm_at_k

SDM_KS = (1, 3, 5, 10)
SDM_SCALE_PER_DEGREE = 5000.0
MA_THRESHOLDS_M = (5, 10, 20, 50, 100)
RADIUS_M = 6_378_137.0  # DenseUAV's Earth radius (the equatorial one)


def degree_distances(query_latlon: torch.Tensor, ranked_latlon: torch.Tensor) -> torch.Tensor:
    """``(Q, K)`` Euclidean distances in degrees from ``(Q, 2)`` to ``(Q, K, 2)`` lat/lon."""
    return torch.linalg.vector_norm(ranked_latlon.double() - query_latlon.double()[:, None, :], dim=-1)


def denseuav_metrics(
    top: torch.Tensor,
    query_latlon: torch.Tensor,
    gallery_latlon: torch.Tensor,
    ks: Sequence[int] = SDM_KS,
    thresholds_m: Sequence[int] = MA_THRESHOLDS_M,
) -> dict[str, float]:
    """DenseUAV's SDM@K and MA@Tm from each query's ranked gallery indices.

    Args:
        top: ``(Q, ≥max K)`` gallery indices, best first.
        query_latlon: ``(Q, 2)`` latitude/longitude of each query.
        gallery_latlon: ``(G, 2)`` latitude/longitude of each gallery item.
        ks: the K of each SDM.
        thresholds_m: the metres of each MA.

    Returns:
        ``{"DenseUAV_SDM@K": %, "DenseUAV_MA@Tm": %}``; queries or items without a position are left
        out (as the metres metrics do).
    """
    ranked = gallery_latlon.double()[top]
    known = torch.isfinite(query_latlon.double()).all(1) & torch.isfinite(ranked).all(-1).all(-1)
    q, ranked = query_latlon.double()[known], ranked[known]
    out: dict[str, float] = {}
    if not len(q):
        return out
    degrees = degree_distances(q, ranked)
    for k in ks:
        if k <= degrees.shape[1]:
            out[f"DenseUAV_SDM@{k}"] = 100.0 * sdm_at_k(degrees, k, SDM_SCALE_PER_DEGREE).mean().item()
    top1_m = haversine_m(q, ranked[:, 0], radius_m=RADIUS_M)
    for t in thresholds_m:
        out[f"DenseUAV_MA@{t}m"] = 100.0 * (top1_m < t).double().mean().item()
    return out
