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
Queries are processed in chunks so the score matrix never exceeds ``max_chunk_elements`` (small
enough, 8 MB, that the passes over a chunk after its matrix product run from cache: 2x faster on
the 2-core CPU than 64 MB chunks), and only
the positives are ranked: a positive's 0-based rank is the number of gallery items scoring higher,
plus the tied ones earlier in the gallery (exactly a stable sort).  It is counted directly when
queries have one positive (D→S, the location's one gallery item found by a lookup of its id) or a
few; for many positives (S→D) only the *candidates* of a query — the items scoring at least its
lowest positive, usually a small share, as positives score high — are sorted (one stable sort of
integer keys for the whole chunk), else every gallery score is located among the query's sorted
positive scores (a binary search) — never a per-query sort of the gallery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mean_geo.errors import require_finite

METRIC_KEYS = ("R@1", "R@5", "R@10", "R@1%", "AP")


def _as_ids(ids) -> torch.Tensor:
    return torch.as_tensor(ids, dtype=torch.long).reshape(-1)


def matched_gallery(query_ids: torch.Tensor, gallery_ids: torch.Tensor) -> torch.Tensor:
    """Mask of the gallery items whose place some query shows.

    The MEAN/Sample4Geo protocol ignores the others (``drop_unmatched_gallery=true``).
    """
    return torch.isin(gallery_ids, torch.unique(query_ids))


NON_FINITE_HINT = "nothing was ranked: the model's weights give NaN/inf (a diverged run? lower optim.optimizer.lr)"


def refuse_non_finite(query_emb: torch.Tensor, gallery_emb: torch.Tensor, what: str = "") -> None:
    """NaN sorts as the largest score, so a broken model would get ranks that look like results."""
    prefix = f"{what} " if what else ""
    require_finite(query_emb, f"{prefix}query embeddings", NON_FINITE_HINT)
    require_finite(gallery_emb, f"{prefix}gallery embeddings", NON_FINITE_HINT)


@torch.no_grad()
def evaluate(
    query_emb: torch.Tensor,
    query_ids: Sequence[int] | torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_ids: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    drop_unmatched_gallery: bool = True,
    max_chunk_elements: int = 1 << 21,
) -> dict[str, float]:
    """Recall@K, Recall@1 % and AP of ranking a gallery for each query (the papers' protocol).

    Args:
        query_emb: ``(Q, D)`` L2-normalised query embeddings.
        query_ids: the place of each query.
        gallery_emb: ``(G, D)`` L2-normalised gallery embeddings.
        gallery_ids: the place of each gallery item.
        ks: the K of each recall.
        drop_unmatched_gallery: ignore gallery places no query shows (MEAN/Sample4Geo's protocol).
        max_chunk_elements: score-matrix elements per chunk (bounds memory).

    Returns:
        Percentages: ``{"R@1", "R@5", "R@10", "R@1%", "AP"}`` (one ``R@k`` per k in ``ks``).

    Raises:
        ValueError: embeddings and ids of different lengths.
        NonFiniteError: NaN or inf embeddings (nothing is ranked).
    """
    device = query_emb.device
    q = query_emb.float()
    g = gallery_emb.float().to(device)
    qid, gid = _as_ids(query_ids).to(device), _as_ids(gallery_ids).to(device)
    if q.shape[0] != qid.shape[0] or g.shape[0] != gid.shape[0]:
        raise ValueError("embeddings and ids differ in length")
    refuse_non_finite(q, g)
    full_gallery = gid.shape[0]
    if drop_unmatched_gallery:
        keep = matched_gallery(qid, gid)
        g, gid = g[keep], gid[keep]
    return _ranked_metrics(lambda start, end: q[start:end] @ g.T, qid, gid, full_gallery, ks, max_chunk_elements)


@torch.no_grad()
def evaluate_scores(
    scores: torch.Tensor,
    query_ids: Sequence[int] | torch.Tensor,
    gallery_ids: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    drop_unmatched_gallery: bool = True,
    max_chunk_elements: int = 1 << 21,
) -> dict[str, float]:
    """The same metrics from a ``(Q, G)`` score matrix (higher = more similar).

    For rankings that are not one dot product: multi-query pooling and voting, re-ranking.
    """
    qid = _as_ids(query_ids).to(scores.device)
    gid = _as_ids(gallery_ids).to(scores.device)
    if scores.shape != (qid.shape[0], gid.shape[0]):
        raise ValueError(f"scores of shape {tuple(scores.shape)} for {qid.shape[0]} queries and {gid.shape[0]} items")
    full_gallery = gid.shape[0]
    if drop_unmatched_gallery:
        keep = matched_gallery(qid, gid)
        scores, gid = scores[:, keep], gid[keep]
    return _ranked_metrics(lambda start, end: scores[start:end].float(), qid, gid, full_gallery, ks, max_chunk_elements)


def _ranked_metrics(
    score_rows: Callable[[int, int], torch.Tensor],
    qid: torch.Tensor,
    gid: torch.Tensor,
    full_gallery: int,
    ks: Sequence[int],
    max_chunk_elements: int,
) -> dict[str, float]:
    """R@K, R@1 % and AP from the scores of query rows ``[start, end)`` against gallery ids ``gid``.

    The unmatched places are already dropped when asked; ``full_gallery`` is the number of items
    before that, which is what R@1 % is read against.
    """
    device = qid.device
    if qid.shape[0] == 0 or full_gallery == 0:
        raise ValueError("empty query or gallery")
    one_percent = round(0.01 * full_gallery)  # Python round, like the official code
    n_gallery = gid.shape[0]
    chunk = max(1, max_chunk_elements // max(n_gallery, 1))
    q_count = qid.shape[0]
    # one gallery item per location (D→S): each query's positive is found by a lookup, not by a
    # (Q, G) comparison of ids
    positive_col = _single_positive_columns(qid, gid)

    first_rank = torch.full((q_count,), n_gallery + full_gallery, dtype=torch.long, device=device)
    ap = torch.zeros(q_count, dtype=torch.float64, device=device)
    for start in range(0, q_count, chunk):
        end = min(start + chunk, q_count)
        scores = score_rows(start, end)
        if positive_col is not None and bool((positive_col[start:end] >= 0).all()):
            rows = torch.arange(end - start, device=device)
            ranks = single_positive_ranks(scores, positive_col[start:end], max_chunk_elements)
            n_good = torch.ones_like(rows)
        else:
            good = gid[None, :] == qid[start:end, None]
            rows, ranks = positive_ranks(scores, good, max_chunk_elements)
            n_good = good.sum(dim=1)
        if rows.numel() == 0:
            continue
        # order the positives of each query by rank: the i-th positive has rank r_i
        order = torch.argsort(rows * (n_gallery + 1) + ranks)
        rows, r = rows[order], ranks[order].to(torch.float64)
        row_start = torch.cumsum(n_good, 0) - n_good
        i = (torch.arange(rows.numel(), device=device) - row_start[rows] + 1).to(torch.float64)
        p_at = i / (r + 1)
        p_before = torch.where(r > 0, (i - 1) / r.clamp(min=1), torch.ones_like(r))
        contrib = (p_at + p_before) / (2 * n_good[rows].to(torch.float64))
        ap[start:end] = torch.zeros(end - start, dtype=torch.float64, device=device).index_add_(0, rows, contrib)
        first = torch.full((end - start,), n_gallery + full_gallery, dtype=torch.long, device=device)
        first_rank[start:end] = first.scatter_reduce(0, rows, ranks, reduce="amin")

    out = {f"R@{k}": 100.0 * (first_rank < k).double().mean().item() for k in ks}
    out["R@1%"] = 100.0 * (first_rank <= one_percent).double().mean().item()
    out["AP"] = 100.0 * ap.mean().item()
    return out


def _single_positive_columns(qid: torch.Tensor, gid: torch.Tensor) -> torch.Tensor | None:
    """Gallery column of each query's only positive (-1: none).

    None if some location has several gallery items (or none at all).
    """
    if gid.numel() == 0:
        return None
    sorted_gid, order = torch.sort(gid)
    if bool((sorted_gid[1:] == sorted_gid[:-1]).any()):
        return None
    at = torch.searchsorted(sorted_gid, qid.contiguous()).clamp(max=gid.numel() - 1)
    return torch.where(sorted_gid[at] == qid, order[at], -1)


def single_positive_ranks(scores: torch.Tensor, cols: torch.Tensor, max_elements: int = 1 << 21) -> torch.Tensor:
    """0-based stable rank of each row's one positive at column ``cols[row]`` (D→S).

    Items scoring higher, plus tied items earlier in the gallery — counted in place, ties fixed only
    where there are any.
    """
    rows = torch.arange(scores.shape[0], device=scores.device)
    pos_scores = scores[rows, cols]
    ranks = (scores > pos_scores[:, None]).sum(dim=1)
    tied = torch.nonzero((scores == pos_scores[:, None]).sum(dim=1) > 1).flatten()
    block = max(1, max_elements // scores.shape[1])
    for b in range(0, tied.numel(), block):
        sel = tied[b : b + block]
        ranks[sel] += _earlier_ties(scores, sel, cols[sel], pos_scores[sel])
    return ranks


def _earlier_ties(
    scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, pos_scores: torch.Tensor
) -> torch.Tensor:
    """The items tied with each positive that come before it in the gallery.

    The positives are at ``(rows, cols)``, scoring ``pos_scores``; a stable sort ranks those first.
    """
    columns = torch.arange(scores.shape[1], device=scores.device)
    return ((scores[rows] == pos_scores[:, None]) & (columns[None, :] < cols[:, None])).sum(dim=1)


def _stable_rank(values: torch.Tensor, row_of: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Rank of each entry within its row by descending value, ties in the given order.

    Entries are row-major (``row_of`` ascending): a stable sort per row, as one sort of integer keys.
    """
    bits = (values.float() + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into 0.0
    ordered = torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)  # integer order == float order
    key = row_of * (1 << 33) + ((1 << 31) - ordered)  # row ascending, value descending
    order = torch.sort(key, stable=True).indices
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    per_row = torch.bincount(row_of, minlength=n_rows)
    return position - (torch.cumsum(per_row, 0) - per_row)[row_of]


def positive_ranks(
    scores: torch.Tensor,
    good: torch.Tensor,
    max_elements: int = 1 << 21,
    direct_max_positives: int = 16,
    max_candidate_fraction: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of every positive in its row's stable descending order.

    ``scores, good: (c, G)``.  Returns (row of each positive, its rank), positives in row-major order.
    Rows with several positives are ranked among their *candidates* (items scoring at least the row's
    lowest positive) when those are at most ``max_candidate_fraction`` of the chunk — the usual case,
    as positives score high — else by the direct count or the binary search below.
    """
    rows, cols = good.nonzero(as_tuple=True)
    n = scores.shape[1]
    if rows.numel() == 0:
        return rows, rows
    pos_scores = scores[rows, cols]
    block = max(1, max_elements // n)

    def earlier_ties(sel: torch.Tensor) -> torch.Tensor:
        return _earlier_ties(scores, rows[sel], cols[sel], pos_scores[sel])

    if rows.numel() == scores.shape[0] and bool((rows == torch.arange(rows.numel(), device=rows.device)).all()):
        return rows, single_positive_ranks(scores, cols, max_elements)  # exactly one positive per query
    if max_candidate_fraction > 0:
        ranked = _ranks_among_candidates(scores, rows, cols, pos_scores, max_candidate_fraction)
        if ranked is not None:
            return rows, ranked
    if int(good.sum(dim=1).max()) <= direct_max_positives:
        ranks = torch.empty_like(rows)
        for b in range(0, rows.numel(), block):
            sel = torch.arange(b, min(b + block, rows.numel()), device=rows.device)
            ranks[sel] = (scores[rows[sel]] > pos_scores[sel, None]).sum(dim=1) + earlier_ties(sel)
        return rows, ranks
    # many positives per query (S→D): no sort of the gallery.  Each gallery score is located among
    # the row's few sorted positive scores (binary search); a histogram of those positions, summed
    # from the top, counts the items scoring above each positive.
    n_good = good.sum(dim=1)
    width = int(n_good.max())
    row_start = torch.cumsum(n_good, 0) - n_good
    slot = torch.arange(rows.numel(), device=rows.device) - row_start[rows]
    padded = torch.full((scores.shape[0], width), float("inf"), dtype=scores.dtype, device=scores.device)
    padded[rows, slot] = pos_scores
    sorted_pos, perm = torch.sort(padded, dim=1)
    below = torch.searchsorted(sorted_pos, scores)  # (c, G): positives scoring strictly below each item
    hist = torch.zeros(scores.shape[0], width + 1, dtype=torch.long, device=scores.device)
    hist.scatter_add_(1, below, torch.ones_like(below))
    above_sorted = hist.flip(1).cumsum(1).flip(1)[:, 1:]  # items scoring above the k-th lowest positive
    above = torch.empty_like(above_sorted).scatter_(1, perm, above_sorted)
    ranks = above[rows, slot]
    # stable order: an item tying a positive's score and earlier in the gallery ranks first; only rows
    # where some item other than the positives themselves ties a positive score need the exact count
    # an item equals a positive score exactly when it equals the first positive not below it
    nearest = sorted_pos.gather(1, below.clamp(max=width - 1))
    equal_items = ((nearest == scores) & (below < width)).sum(dim=1)
    distinct = torch.ones_like(sorted_pos, dtype=torch.bool)
    distinct[:, 1:] = sorted_pos[:, 1:] != sorted_pos[:, :-1]
    tie_rows = (equal_items > n_good) | ((~distinct) & torch.isfinite(sorted_pos)).any(dim=1)
    tied = torch.nonzero(tie_rows[rows]).flatten()
    for b in range(0, tied.numel(), block):
        sel = tied[b : b + block]
        ranks[sel] += earlier_ties(sel)
    return rows, ranks


def _ranks_among_candidates(
    scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, pos_scores: torch.Tensor, max_fraction: float
) -> torch.Tensor | None:
    """Ranks of the positives ``(rows, cols)`` (row-major) by a stable sort of each row's candidates.

    An item scoring below every positive of its row cannot change any positive's rank.  Returns None
    when the candidates exceed ``max_fraction`` of the chunk (the binary search is cheaper then).
    """
    if scores.dtype == torch.float64:  # the integer sort keys encode float32 values
        return None
    c = scores.shape[0]
    lowest = torch.full((c,), float("inf"), dtype=scores.dtype, device=scores.device)
    lowest = lowest.scatter_reduce(0, rows, pos_scores, reduce="amin")
    candidate = scores >= lowest[:, None]
    if int(candidate.sum()) > max_fraction * candidate.numel():
        return None
    cand_rows, cand_cols = candidate.nonzero(as_tuple=True)  # row-major, gallery order within a row
    rank = _stable_rank(scores[cand_rows, cand_cols], cand_rows, c)
    # positives are candidates, and both lists are row-major: find them by their flat index
    n = scores.shape[1]
    return rank[torch.searchsorted(cand_rows * n + cand_cols, rows * n + cols)]
