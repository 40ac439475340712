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

from collections.abc import Callable

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
    q, g = query_emb.float(), gallery_emb.float()
    if mode == "mean":
        return mean_pooled(q, group) @ g.T
    return pool_image_scores(lambda start, end: q[start:end] @ g.T, group, mode, g.shape[0], query_chunk)


def mean_pooled(query_emb: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """``(n_groups, D)``: each group's embeddings averaged, then L2-normalised."""
    n_groups = int(group.max()) + 1
    pooled = torch.zeros(n_groups, query_emb.shape[1], dtype=query_emb.dtype, device=query_emb.device)
    return F.normalize(pooled.index_add_(0, group, query_emb), dim=1)


def pool_image_scores(
    score_rows: Callable[[int, int], torch.Tensor],
    group: torch.Tensor,
    mode: str,
    n_gallery: int,
    query_chunk: int = 4096,
) -> torch.Tensor:
    """``max`` or ``vote`` over the per-image score rows ``score_rows(start, end)`` (dot products,
    or re-ranked scores), read in chunks of queries.  Scores must lie in [-1, 1]: a vote is worth 4."""
    if mode not in ("max", "vote"):
        raise ValueError(f"pooling {mode!r}: expected 'max' or 'vote'")
    n_groups = int(group.max()) + 1
    best = torch.full((n_groups, n_gallery), -torch.inf, device=group.device)
    votes = torch.zeros(n_groups, n_gallery, device=group.device)
    for start in range(0, group.shape[0], query_chunk):
        scores = score_rows(start, start + query_chunk).float()
        rows = group[start : start + query_chunk]
        best.index_reduce_(0, rows, scores, reduce="amax")
        if mode == "vote":
            top1 = scores.argmax(dim=1)
            votes.index_put_((rows, top1), torch.ones_like(top1, dtype=votes.dtype), accumulate=True)
    if mode == "max":
        return best
    # votes first; cosine scores lie in [-1, 1], so 4 per vote always outweighs the tie-break
    return 4.0 * votes + best
