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

EARTH_RADIUS_M = 6_371_008.8
SDM_SCALE = 0.001
THRESHOLDS_M = (25, 50, 100)


def haversine_m(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Great-circle distance in metres between ``(..., 2)`` lat/lon tensors (degrees), elementwise,
    computed in float64 (give float64 coordinates: float32 degrees are only good to ~0.2 m)."""
    lat1, lon1, lat2, lon2 = (torch.deg2rad(t.double()) for t in (a[..., 0], a[..., 1], b[..., 0], b[..., 1]))
    h = torch.sin((lat2 - lat1) / 2) ** 2 + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * torch.asin(torch.sqrt(h.clamp(0, 1)))


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
    d = haversine_m(query_latlon[:, None, :].double(), gallery_latlon[top].double())  # (Q, K)
    out: dict[str, float] = {}
    for k in ks:
        if k <= k_max:
            out[f"Dis@{k}"] = d[:, :k].mean(1).mean().item()
            out[f"SDM@{k}"] = 100.0 * sdm_at_k(d, k).mean().item()
    for t in thresholds_m:
        out[f"Acc@{t}m"] = 100.0 * (d[:, 0] <= t).double().mean().item()
    return out
