"""One evaluation under every convention asked for: single images, multi-query (mean / max /
vote), each with and without k-reciprocal re-ranking — metrics named by convention, so numbers from
different conventions are never mixed up.

Names: ``d2s`` (single images), ``d2s_rerank``, ``d2s_multi_<mode>``, ``d2s_multi_<mode>_rerank``
(and ``s2d``, ``s2d_rerank``: a place has one satellite image, so no multi-query there).
Re-ranking runs over the gallery that is ranked (without the unmatched places under
``drop_unmatched_gallery``); max and vote pool the per-image re-ranked scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mean_geo.retrieval.denseuav_metrics import SDM_KS, denseuav_metrics
from mean_geo.retrieval.distances import ground_errors, ranked_distance_metrics
from mean_geo.retrieval.evaluate import evaluate, evaluate_scores, matched_gallery, refuse_non_finite
from mean_geo.retrieval.multi_query import group_scores, mean_pooled, pool_image_scores
from mean_geo.retrieval.rerank import RerankSettings, k_reciprocal_distances
from mean_geo.retrieval.search import stable_topk, topk_search

#: the recall@K curves (figures, metrics.json) go up to this K
CURVE_K = 20

#: a dataset's own position metrics, beside the metres ones: name -> (metrics of (top, q, g), the K they need)
DATASET_POSITION_METRICS = {"denseuav": (denseuav_metrics, max(SDM_KS))}


@dataclass
class ConventionResults:
    """Per convention name: metrics (R@K, R@1 %, AP; distances when positions are known), the
    recall@1..K curve, and the metres from each query to its top-1 item."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    top1_errors_m: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def evaluate_conventions(
    direction: str,
    q_emb: torch.Tensor,
    q_ids: torch.Tensor,
    g_emb: torch.Tensor,
    g_ids: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    drop_unmatched_gallery: bool = True,
    multi_query: str = "none",
    groups: tuple[torch.Tensor, torch.Tensor] | None = None,
    rerank: RerankSettings | None = None,
    q_latlon: torch.Tensor | None = None,
    g_latlon: torch.Tensor | None = None,
    position_metrics: str | None = None,
) -> ConventionResults:
    """Evaluate one direction under every convention asked for.

    ``groups``: ``(group of each query, place id of each group)`` for multi-query; ``q_latlon``
    and ``g_latlon``: ``(N, 2)`` positions of the queries and of every gallery item, for the
    distance metrics (``Dis@K``, ``SDM@K``, ``Acc@Tm``); ``position_metrics``: a dataset's own
    ones beside them (:data:`DATASET_POSITION_METRICS`, e.g. ``denseuav``)."""
    if position_metrics is not None and position_metrics not in DATASET_POSITION_METRICS:
        raise ValueError(f"position metrics {position_metrics!r}: expected one of {sorted(DATASET_POSITION_METRICS)}")
    own_metrics, own_k = DATASET_POSITION_METRICS.get(position_metrics or "", (None, 0))
    results = ConventionResults()
    refuse_non_finite(q_emb, g_emb, direction)
    q, g = q_emb.float(), g_emb.float()
    keep = matched_gallery(q_ids, g_ids) if drop_unmatched_gallery else torch.ones_like(g_ids, dtype=torch.bool)
    n_ranked = int(keep.sum())
    curve_ks = sorted({*ks, *range(1, min(CURVE_K, n_ranked) + 1)})

    def record(name: str, ids: torch.Tensor, scores: torch.Tensor | None, latlon: torch.Tensor | None) -> None:
        if scores is None:  # one dot product: evaluated in chunks, never a (Q, G) matrix
            found = evaluate(q, ids, g, g_ids, ks=curve_ks, drop_unmatched_gallery=drop_unmatched_gallery)
        else:
            found = evaluate_scores(scores, ids, g_ids, ks=curve_ks, drop_unmatched_gallery=drop_unmatched_gallery)
        results.curves[name] = [found[f"R@{k}"] for k in range(1, min(CURVE_K, n_ranked) + 1)]
        metrics = {f"R@{k}": found[f"R@{k}"] for k in ks}
        metrics.update({key: found[key] for key in ("R@1%", "AP")})
        if latlon is not None and g_latlon is not None:
            k = min(max(*ks, own_k), n_ranked)
            top = topk_search(q, g[keep], k)[1] if scores is None else stable_topk(scores[:, keep], k)[1]
            ranked_latlon = g_latlon[keep.cpu()].cpu()
            errors = ground_errors(top.cpu(), latlon.cpu(), ranked_latlon)
            metrics.update(ranked_distance_metrics(errors, ks))
            if own_metrics is not None:
                metrics.update(own_metrics(top.cpu(), latlon.cpu(), ranked_latlon))
            known = torch.isfinite(errors).all(dim=1)  # positions of a partial coordinates table
            if bool(known.any()):
                results.top1_errors_m[name] = errors[known, 0]
        results.metrics[name] = metrics

    def reranked(queries: torch.Tensor) -> torch.Tensor:
        """Scores (negated re-ranked distances, in [-1, 0]); unmatched gallery columns at -inf."""
        if rerank is None:
            raise ValueError("re-ranked scores without re-ranking settings")
        scores = torch.full((queries.shape[0], g.shape[0]), -torch.inf, device=g.device)
        scores[:, keep] = -k_reciprocal_distances(queries, g[keep], rerank)
        return scores

    per_image_reranked = reranked(q) if rerank is not None else None  # once: it is the costly part
    record(direction, q_ids, None, q_latlon)
    if per_image_reranked is not None:
        record(f"{direction}_rerank", q_ids, per_image_reranked, q_latlon)
    if direction != "d2s" or multi_query == "none":
        return results
    if groups is None:
        raise ValueError("multi-query evaluation needs the query groups")
    group, group_ids = groups
    group_latlon = _group_positions(q_latlon, group) if q_latlon is not None else None
    name = f"d2s_multi_{multi_query}"
    record(name, group_ids, group_scores(q, group, g, multi_query), group_latlon)
    if per_image_reranked is None:
        return results
    if multi_query == "mean":  # the pooled embeddings are the queries that get re-ranked
        reranked_groups = reranked(mean_pooled(q, group))
    else:  # max / vote pool the per-image re-ranked scores
        reranked_groups = pool_image_scores(lambda s, e: per_image_reranked[s:e], group, multi_query, g.shape[0])
    record(f"{name}_rerank", group_ids, reranked_groups, group_latlon)
    return results


def _group_positions(latlon: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """A query group's position: the mean of its images' (one place: the same point, or photos a
    few metres apart)."""
    n_groups = int(group.max()) + 1
    total = torch.zeros(n_groups, 2, dtype=torch.float64).index_add_(0, group.cpu(), latlon.double().cpu())
    count = torch.bincount(group.cpu(), minlength=n_groups).double()
    return total / count[:, None]
