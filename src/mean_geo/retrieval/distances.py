"""Metres on the ground: how far the retrieved tiles are from where the drone photo was taken.

For each query with a known true position and the top-K gallery tiles' centres:

- ``Dis@K`` — mean over queries of the mean distance (m) from the true position to the top-K tiles;
- ``SDM@K`` — Game4Loc's distance-weighted score,
  ``Σ_{i≤K} (K−i+1)·exp(−s·d_i) / Σ_{i≤K} (K−i+1)`` with ``s = 0.001``, in percent;
- ``Acc@Tm`` — share of queries whose top-1 tile lies within T metres, in percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mean_geo.retrieval.search import topk_search
from mean_geo.utils.earth import EARTH_RADIUS_M

SDM_SCALE = 0.001
THRESHOLDS_M = (25, 50, 100)


def haversine_m(a: torch.Tensor, b: torch.Tensor, radius_m: float = EARTH_RADIUS_M) -> torch.Tensor:
    """Great-circle distance in metres between ``(..., 2)`` lat/lon tensors (degrees), elementwise,
    computed in float64 (give float64 coordinates: float32 degrees are only good to ~0.2 m), on a
    sphere of ``radius_m`` (the mean Earth radius; DenseUAV's metric uses the equatorial one)."""
    lat1, lon1, lat2, lon2 = (torch.deg2rad(t.double()) for t in (a[..., 0], a[..., 1], b[..., 0], b[..., 1]))
    h = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    return 2 * radius_m * torch.asin(torch.sqrt(h.clamp(0, 1)))


def sdm_at_k(distances: torch.Tensor, k: int, scale: float = SDM_SCALE) -> torch.Tensor:
    """SDM@K of every query from its top-K distances ``(Q, ≥K)``."""
    weights = torch.arange(k, 0, -1, dtype=torch.float64)  # K−i+1 for i = 1..K
    return (weights * torch.exp(-scale * distances[:, :k].double())).sum(1) / weights.sum()


def distance_metrics(
    query_emb: torch.Tensor,
    query_latlon: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_latlon: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    thresholds_m: Sequence[int] = THRESHOLDS_M,
) -> dict[str, float]:
    """``{"Dis@K", "SDM@K", "Acc@Tm"}`` for the ranking of ``query_emb`` against ``gallery_emb``."""
    k_max = min(max(ks), gallery_emb.shape[0])
    _, top = topk_search(query_emb.float(), gallery_emb.float(), k=k_max)
    return ranked_distance_metrics(ground_errors(top, query_latlon, gallery_latlon), ks, thresholds_m)


def ground_errors(top: torch.Tensor, query_latlon: torch.Tensor, gallery_latlon: torch.Tensor) -> torch.Tensor:
    """``(Q, K)`` metres from each query's true position to its top-K gallery items (``top``: their
    indices, best first) — what every distance metric and the error histogram are read from."""
    return haversine_m(query_latlon[:, None, :].double(), gallery_latlon[top].double())


def ranked_distance_metrics(
    errors: torch.Tensor, ks: Sequence[int] = (1, 5, 10), thresholds_m: Sequence[int] = THRESHOLDS_M
) -> dict[str, float]:
    """The metrics from :func:`ground_errors` (for rankings that are not one dot product:
    multi-query, re-ranking).

    A query whose own position is unknown, or one of whose top-K items has none (NaN rows of a
    coordinates table that covers only part of the set), has no distance: it is left out, and
    ``metres_queries`` says over how many queries the metres were computed."""
    known = torch.isfinite(errors).all(dim=1)
    errors = errors[known]
    out: dict[str, float] = {"metres_queries": float(known.sum())}
    if not len(errors):
        return out
    for k in ks:
        if k <= errors.shape[1]:
            out[f"Dis@{k}"] = errors[:, :k].mean(1).mean().item()
            out[f"SDM@{k}"] = 100.0 * sdm_at_k(errors, k).mean().item()
    for t in thresholds_m:
        out[f"Acc@{t}m"] = 100.0 * (errors[:, 0] <= t).double().mean().item()
    return out
