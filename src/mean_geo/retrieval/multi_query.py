"""Multi-query retrieval: all drone images of a place (per altitude on SUES-200) as one query.

Three conventions of the field, each ranking the gallery once per query group:

- ``mean`` — the group's embeddings averaged, then L2-normalised (University-1652 baseline's
  ``--multi``): one dot product per gallery item;
- ``max`` — a gallery item scores the best similarity any image of the group gives it (pooling
  over the per-image rankings, as the SUES-200 benchmark's max-pooling);
- ``vote`` — every image votes for its top-1 gallery item; items rank by votes, ties by their
  ``max`` score (majority voting over per-image rankings).

The rankings are evaluated with the single-image protocol (:func:`evaluate_scores`), one query per
group, so R@K, R@1 % and AP keep their meaning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mean_geo.errors import ConfigError

MODES = ("none", "mean", "max", "vote")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"eval.multi_query={mode!r}: expected one of {list(MODES)}")
    return mode


def query_groups(ids: torch.Tensor, altitudes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(group of each query (Q,), place id of each group (n_groups,))``: one group per place, or
    per (place, altitude) when altitudes are given (SUES-200 evaluated over several)."""
    keys = ids.long()[:, None] if altitudes is None else torch.stack([ids.long(), altitudes.long()], dim=1)
    unique, group = torch.unique(keys, dim=0, return_inverse=True)
    return group, unique[:, 0]


def group_scores(
    query_emb: torch.Tensor,
    group: torch.Tensor,
    gallery_emb: torch.Tensor,
    mode: str,
    query_chunk: int = 4096,
) -> torch.Tensor:
    """``(n_groups, G)`` scores of every query group against the gallery (higher = better)."""
    check_mode(mode)
    if mode == "none":
        raise ValueError("multi_query='none' has no group scores; evaluate the single images")
    n_groups = int(group.max()) + 1
    q, g = query_emb.float(), gallery_emb.float()
    if mode == "mean":
        pooled = torch.zeros(n_groups, q.shape[1], device=q.device).index_add_(0, group, q)
        return F.normalize(pooled, dim=1) @ g.T
    best = torch.full((n_groups, g.shape[0]), -torch.inf, device=q.device)
    votes = torch.zeros(n_groups, g.shape[0], device=q.device)
    for start in range(0, q.shape[0], query_chunk):
        scores = q[start : start + query_chunk] @ g.T
        rows = group[start : start + query_chunk]
        best.index_reduce_(0, rows, scores, reduce="amax")
        if mode == "vote":
            top1 = scores.argmax(dim=1)
            votes.index_put_((rows, top1), torch.ones_like(top1, dtype=votes.dtype), accumulate=True)
    if mode == "max":
        return best
    # votes first; cosine scores lie in [-1, 1], so 4 per vote always outweighs the tie-break
    return 4.0 * votes + best
