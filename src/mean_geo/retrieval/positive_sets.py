"""Retrieval where a query's true matches are a set of gallery items shared with other queries
(GTA-UAV: the tiles a drone photo's footprint overlaps by IoU > 0.39), not one place id.

Game4Loc's protocol (its ``evaluate/gta.py``): rank the whole gallery by cosine similarity; R@K = a
positive within the top K; R@1 % = the CMC read at ``round(0.01·N)``; AP = mean over the positives
of precision at each (sklearn's average precision on the ranking, no interpolation); and from the
metres between the photo's footprint centre and the top-K tiles' centres, ``Dis@K`` (their mean)
and ``SDM@K`` (s = 0.001), K = 1, 3, 5.  Ranks are stable (ties keep gallery order), as elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mean_geo.retrieval.distances import ranked_distance_metrics
from mean_geo.retrieval.evaluate import positive_ranks, refuse_non_finite
from mean_geo.retrieval.search import topk_search

DISTANCE_KS = (1, 3, 5)


@torch.no_grad()
def evaluate_positive_sets(
    query_emb: torch.Tensor,
    gallery_emb: torch.Tensor,
    positives: Sequence[Sequence[int]],
    ks: Sequence[int] = (1, 5, 10),
    query_xy_m: torch.Tensor | None = None,
    gallery_xy_m: torch.Tensor | None = None,
    distance_ks: Sequence[int] = DISTANCE_KS,
    max_chunk_elements: int = 1 << 21,
) -> dict[str, float]:
    """R@K, R@1 %, AP, and with planar positions (metres) Dis@K, SDM@K and Acc@Tm.

    Args:
        query_emb: ``(Q, D)`` L2-normalised query embeddings.
        gallery_emb: ``(G, D)`` L2-normalised gallery embeddings.
        positives: per query, the gallery indices of its true matches (at least one each).
        ks: the K of each recall.
        query_xy_m: ``(Q, 2)`` where each query is, in metres on the map.
        gallery_xy_m: ``(G, 2)`` where each gallery item's centre is.
        distance_ks: the K of Dis@K and SDM@K.
        max_chunk_elements: score-matrix elements per chunk.

    Returns:
        Percentages (R@K, R@1%, AP, SDM@K, Acc@Tm) and metres (Dis@K).
    """
    q, g = query_emb.float(), gallery_emb.float()
    if len(positives) != q.shape[0]:
        raise ValueError(f"{len(positives)} positive sets for {q.shape[0]} queries")
    if any(len(p) == 0 for p in positives):
        raise ValueError("a query without positives: leave it out of the queries (Game4Loc does)")
    refuse_non_finite(q, g)
    n_gallery = g.shape[0]
    chunk = max(1, max_chunk_elements // max(n_gallery, 1))
    device = q.device  # every index tensor beside the scores: CUDA refuses CPU ones in scatter/index ops
    first = torch.empty(q.shape[0], dtype=torch.long, device=device)
    ap = torch.empty(q.shape[0], dtype=torch.float64, device=device)
    for start in range(0, q.shape[0], chunk):
        end = min(start + chunk, q.shape[0])
        scores = q[start:end] @ g.T
        good = torch.zeros(end - start, n_gallery, dtype=torch.bool, device=device)
        for row, cols in enumerate(positives[start:end]):
            good[row, list(cols)] = True
        rows, ranks = positive_ranks(scores, good, max_chunk_elements)
        order = torch.argsort(rows * (n_gallery + 1) + ranks)
        rows, r = rows[order], ranks[order].double()
        n_good = good.sum(dim=1)
        row_start = torch.cumsum(n_good, 0) - n_good
        i = (torch.arange(rows.numel(), device=device) - row_start[rows] + 1).double()
        ap[start:end] = (
            torch.zeros(end - start, dtype=torch.float64, device=device).index_add_(0, rows, i / (r + 1)) / n_good
        )
        first[start:end] = torch.full((end - start,), n_gallery, dtype=torch.long, device=device).scatter_reduce(
            0, rows, ranks, reduce="amin"
        )
    out = {f"R@{k}": 100.0 * (first < k).double().mean().item() for k in ks}
    out["R@1%"] = 100.0 * (first <= round(0.01 * n_gallery)).double().mean().item()
    out["AP"] = 100.0 * ap.mean().item()
    if query_xy_m is not None and gallery_xy_m is not None:
        k = min(max(distance_ks), n_gallery)
        top = topk_search(q, g, k)[1].cpu()
        errors = torch.linalg.vector_norm(
            gallery_xy_m.double().cpu()[top] - query_xy_m.double().cpu()[:, None, :], dim=-1
        )
        out.update(ranked_distance_metrics(errors, distance_ks))
    return out
