"""The official per-query evaluation loop, re-implemented for the benchmark's baseline.

Shape of University1652-Baseline ``evaluate_gpu.py`` (and Sample4Geo's ``evaluate``): for every query,
score the whole gallery, ``argsort`` it, find good and junk indices with ``np.argwhere``/``np.in1d``
(``np.isin`` in NumPy 2), drop junk, build the CMC vector and accumulate the trapezoidal AP.  Our code, written for the
comparison; the official files are not copied.
"""

from __future__ import annotations

import numpy as np


def _compute_map(index: np.ndarray, good: np.ndarray, junk: np.ndarray) -> tuple[float, np.ndarray]:
    cmc = np.zeros(len(index), dtype=np.int64)
    if good.size == 0:
        cmc[0] = -1
        return 0.0, cmc
    index = index[np.isin(index, junk, invert=True)]
    rows_good = np.argwhere(np.isin(index, good)).flatten()
    cmc[rows_good[0] :] = 1
    ap = 0.0
    for i in range(len(good)):
        precision = (i + 1) / (rows_good[i] + 1)
        old = i / rows_good[i] if rows_good[i] != 0 else 1.0
        ap += (old + precision) / 2 / len(good)
    return ap, cmc


def official_evaluate(qf: np.ndarray, ql: np.ndarray, gf: np.ndarray, gl: np.ndarray, drop_unmatched: bool = True):
    """Per-query loop; returns the same keys as :func:`mean_geo.retrieval.evaluate.evaluate`."""
    return _per_query(lambda i: gf @ qf[i], ql, gl, drop_unmatched)


def official_evaluate_scores(scores: np.ndarray, ql: np.ndarray, gl: np.ndarray, drop_unmatched: bool = True):
    """The same loop over the rows of a ``(Q, G)`` score matrix (multi-query, re-ranking)."""
    return _per_query(lambda i: scores[i], ql, gl, drop_unmatched)


def _per_query(score_of, ql: np.ndarray, gl: np.ndarray, drop_unmatched: bool):
    ql, gl = np.asarray(ql), np.asarray(gl)
    if drop_unmatched:
        gl = np.where(np.isin(gl, ql), gl, -1)
    cmc_sum = np.zeros(len(gl))
    ap_sum = 0.0
    junk_all = np.argwhere(gl == -1).flatten()
    for i in range(len(ql)):
        index = np.argsort(-score_of(i), kind="stable")
        good = np.argwhere(gl == ql[i]).flatten()
        ap, cmc = _compute_map(index, good, junk_all)
        if cmc[0] == -1:
            continue
        cmc_sum += cmc
        ap_sum += ap
    cmc = cmc_sum / len(ql)
    return {
        "R@1": cmc[0] * 100,
        "R@5": cmc[4] * 100,
        "R@10": cmc[9] * 100,
        "R@1%": cmc[round(len(gl) * 0.01)] * 100,
        "AP": ap_sum / len(ql) * 100,
    }


def official_k_reciprocal(
    query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3
) -> np.ndarray:
    """k-reciprocal re-ranked ``(Q, G)`` distances the way the University-1652 baseline's
    ``re_ranking`` computes them: the dense ``(N, N)`` distance and ``V`` matrices and a Python loop
    over every item (``N = Q + G``) — the shape, not their code.  Ties are taken in index order, and
    the distance is the paper's ``2 − 2·cos`` (see :mod:`mean_geo.retrieval.rerank`).  The reference
    the batched version is checked against (tests) and timed against (benchmarks)."""
    feats = np.concatenate([query, gallery]).astype(np.float64)
    n, n_query = feats.shape[0], query.shape[0]
    similarity = feats @ feats.T
    dist = 2.0 - 2.0 * similarity
    dist = dist / np.where(dist.max(axis=1) > 0, dist.max(axis=1), 1.0)[:, None]
    order = np.argsort(-similarity, axis=1, kind="stable")  # nearest first, ties in index order

    def reciprocal(i: int, k: int) -> list[int]:
        return [j for j in order[i, : k + 1] if i in order[j, : k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        own = reciprocal(i, k1)
        expanded = set(own)
        for c in own:
            theirs = reciprocal(c, int(np.around(k1 / 2)))
            if len(set(theirs) & set(own)) > 2 / 3 * len(theirs):
                expanded |= set(theirs)
        members = sorted(expanded)
        if members:
            w = np.exp(-dist[i, members])
            v[i, members] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[order[i, :k2]].mean(axis=0) for i in range(n)])
    holders = [np.nonzero(v[:, k])[0] for k in range(n)]  # the inverted index: rows holding column k
    final = np.zeros((n_query, n - n_query))
    for i in range(n_query):
        shared = np.zeros(n)
        for k in np.nonzero(v[i])[0]:
            shared[holders[k]] += np.minimum(v[i, k], v[holders[k], k])
        jaccard = 1 - shared / (2 - shared)
        final[i] = (1 - lam) * jaccard[n_query:] + lam * dist[i, n_query:]
    return final
