"""Retrieval metrics with the University-1652 protocol (R@K, R@1 %, trapezoidal AP), batched.

Protocol (the official ``evaluate_gpu.py`` / Sample4Geo ``evaluate``; anchors §2):
- rank the gallery by cosine similarity (dot product of L2-normalised embeddings), highest first;
  ties keep gallery order (a stable sort);
- positives ("good") = every gallery item of the query's location;
- ``drop_unmatched_gallery=True``: gallery items whose location no query has are junk and removed
  from the ranking (MEAN / Sample4Geo / DAC numbers); ``False`` keeps them as distractors (the
  official University-1652 baseline, LPN, FSRA, MCCG);
- R@K = share of queries whose first positive is within the top K;
- R@1 % = the CMC read at index ``round(0.01 · N)`` with N the full gallery size, as the official
  code does (so it is really R@(round(N/100) + 1));
- AP = Σ_i ½ (P_before(i) + P_at(i)) / n_good over the positives, with P_at(i) = i / (r_i + 1),
  P_before(i) = (i − 1) / r_i or 1 when r_i = 0 (r_i the 0-based rank of the i-th positive);
- a query without any positive counts as a miss with AP 0 (it stays in the denominator).
Queries are processed in chunks so the score matrix never exceeds ``max_chunk_elements``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

METRIC_KEYS = ("R@1", "R@5", "R@10", "R@1%", "AP")


def _as_ids(ids) -> torch.Tensor:
    return torch.as_tensor(ids, dtype=torch.long).reshape(-1)


@torch.no_grad()
def evaluate(
    query_emb: torch.Tensor,
    query_ids: Sequence[int] | torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_ids: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    drop_unmatched_gallery: bool = True,
    max_chunk_elements: int = 1 << 24,
) -> dict[str, float]:
    """Metrics in percent: ``{"R@1", "R@5", "R@10", "R@1%", "AP"}`` (one ``R@k`` per k in ``ks``).

    ``query_emb (Q, D)`` and ``gallery_emb (G, D)`` should be L2-normalised; ids are location ids.
    """
    device = query_emb.device
    q = query_emb.float()
    g = gallery_emb.float().to(device)
    qid, gid = _as_ids(query_ids).to(device), _as_ids(gallery_ids).to(device)
    if q.shape[0] != qid.shape[0] or g.shape[0] != gid.shape[0]:
        raise ValueError("embeddings and ids differ in length")
    if q.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError("empty query or gallery")
    full_gallery = g.shape[0]
    if drop_unmatched_gallery:
        keep = torch.isin(gid, torch.unique(qid))
        g, gid = g[keep], gid[keep]
    one_percent = round(0.01 * full_gallery)  # Python round, like the official code
    n_gallery = g.shape[0]
    chunk = max(1, max_chunk_elements // max(n_gallery, 1))

    first_rank = torch.empty(q.shape[0], dtype=torch.long, device=device)
    ap = torch.empty(q.shape[0], dtype=torch.float64, device=device)
    ranks = torch.arange(n_gallery, device=device, dtype=torch.float64)
    no_hit = n_gallery + full_gallery  # beyond any K
    for start in range(0, q.shape[0], chunk):
        end = min(start + chunk, q.shape[0])
        scores = q[start:end] @ g.T
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        good = gid[order] == qid[start:end, None]  # (c, G) in ranked order
        n_good = good.sum(dim=1)
        first = good.to(torch.uint8).argmax(dim=1)
        first_rank[start:end] = torch.where(n_good > 0, first, torch.full_like(first, no_hit))
        # AP, vectorised over the positives of every query of the chunk
        i = good.cumsum(dim=1).to(torch.float64)  # 1-based index of each positive
        p_at = i / (ranks + 1)
        p_before = torch.where(ranks > 0, (i - 1) / ranks.clamp(min=1), torch.ones_like(i))
        summed = ((p_at + p_before) * good).sum(dim=1) / 2
        ap[start:end] = torch.where(n_good > 0, summed / n_good.clamp(min=1), torch.zeros_like(summed))

    out = {f"R@{k}": 100.0 * (first_rank < k).double().mean().item() for k in ks}
    out["R@1%"] = 100.0 * (first_rank <= one_percent).double().mean().item()
    out["AP"] = 100.0 * ap.mean().item()
    return out
