"""Exact top-k search of L2-normalised embeddings: chunked torch (default) or faiss (optional).

The gallery is scanned in chunks and a running top-k is kept, so a million-tile gallery never needs
a (queries × gallery) score matrix.  faiss ``IndexFlatIP`` is the same exact search, useful where
faiss is already part of a deployment (``pip install -e ".[faiss]"``).
"""

from __future__ import annotations

import torch

from mean_geo.errors import ConfigError

BACKENDS = ("torch", "faiss")


@torch.no_grad()
def topk_search(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int = 10,
    gallery_chunk: int = 65536,
    query_chunk: int = 1024,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and gallery indices of the ``k`` most similar gallery items per query, best first.

    Ties keep the lower gallery index first.  Computes in the query's dtype and device (bf16 halves
    memory traffic).

    Args:
        query: ``(Q, D)`` embeddings.
        gallery: ``(G, D)`` embeddings.
        k: matches per query (at most G).
        gallery_chunk: gallery rows per matrix product (bounds memory).
        query_chunk: query rows per matrix product.
        backend: ``torch`` or ``faiss`` (exact inner product; the same ranking).

    Returns:
        ``(scores (Q, k), indices (Q, k))``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"search backend {backend!r}: expected one of {list(BACKENDS)}")
    k = min(k, gallery.shape[0])
    if backend == "faiss":
        return _faiss_search(query, gallery, k)
    all_scores, all_index = [], []
    for qs in range(0, query.shape[0], query_chunk):
        q = query[qs : qs + query_chunk]
        best_s = torch.full((q.shape[0], 0), float("-inf"), device=q.device)
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=q.device)
        for gs in range(0, gallery.shape[0], gallery_chunk):
            g = gallery[gs : gs + gallery_chunk].to(device=q.device, dtype=q.dtype)
            s, i = stable_topk((q @ g.T).float(), min(k, g.shape[0]))
            cand_s = torch.cat([best_s, s], dim=1)
            cand_i = torch.cat([best_i, i + gs], dim=1)
            # stable on descending score, earlier chunks (lower indices) first among ties
            order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s, best_i = cand_s.gather(1, order), cand_i.gather(1, order)
        all_scores.append(best_s)
        all_index.append(best_i)
    return torch.cat(all_scores), torch.cat(all_index)


def stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``topk`` with ties in index order (``torch.topk`` breaks them arbitrarily).

    Rows where the k-th score is shared with items left out are sorted stably; the k kept are
    ordered by (score descending, index ascending).  Costs one comparison pass beyond ``topk``.
    """
    s, i = scores.topk(k, dim=1)
    boundary = s[:, -1:]
    cut = (scores == boundary).sum(1) > (s == boundary).sum(1)
    if bool(cut.any()):
        sorted_s, sorted_i = torch.sort(scores[cut], dim=1, descending=True, stable=True)
        s[cut], i[cut] = sorted_s[:, :k], sorted_i[:, :k]
    by_index = torch.argsort(i, dim=1)
    s, i = s.gather(1, by_index), i.gather(1, by_index)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    return s.gather(1, order), i.gather(1, order)


def _faiss_search(query: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import faiss
    except ImportError:
        raise ConfigError("search backend 'faiss' needs faiss: pip install -e '.[faiss]'") from None
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery.float().cpu().contiguous().numpy())
    scores, indices = index.search(query.float().cpu().contiguous().numpy(), k)
    return torch.from_numpy(scores), torch.from_numpy(indices).long()
