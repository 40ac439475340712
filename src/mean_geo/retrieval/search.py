"""Exact top-k search of L2-normalised embeddings: chunked torch or faiss, ``auto`` by default.

The gallery is scanned in chunks and a running top-k is kept, so a million-tile gallery never needs
a (queries × gallery) score matrix.  faiss ``IndexFlatIP`` is the same exact search
(``pip install -e ".[faiss]"``); which of the two is faster depends on the CPU, so ``auto`` measures
it once per machine and problem shape (:mod:`mean_geo.retrieval.backend_choice`).  Every backend
returns the same top-k with the same tie rule (higher score first, then the lower gallery index).
"""

from __future__ import annotations

import torch

from mean_geo.errors import ConfigError

BACKENDS = ("auto", "torch", "faiss")
# faiss breaks ties at its k-th item arbitrarily: it is asked for this many more, and rows whose tie
# runs past them are searched again by torch
FAISS_TIE_MARGIN = 8


@torch.no_grad()
def topk_search(
    query: torch.Tensor,
    gallery: torch.Tensor,
    k: int = 10,
    gallery_chunk: int = 65536,
    query_chunk: int = 1024,
    backend: str = "auto",
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
        backend: ``auto`` (the faster of the two on this machine, measured once and cached),
            ``torch`` or ``faiss`` (exact inner product in fp32; the same ranking).

    Returns:
        ``(scores (Q, k), indices (Q, k))``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"search backend {backend!r}: expected one of {list(BACKENDS)}")
    k = min(k, gallery.shape[0])
    if backend == "auto":
        from mean_geo.retrieval.backend_choice import choose_backend

        shape = (query.shape[0], gallery.shape[0], query.shape[1], k, query.device, query.dtype)
        backend = choose_backend(*shape, search=topk_search)
    if backend == "faiss":
        return _faiss_search(query, gallery, k, gallery_chunk, query_chunk)
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


def _faiss_search(
    query: torch.Tensor, gallery: torch.Tensor, k: int, gallery_chunk: int, query_chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat inner-product search of faiss, re-ordered to the torch tie rule.

    faiss returns ``k + FAISS_TIE_MARGIN`` items, sorted here by (score descending, index
    ascending); rows whose k-th score is shared beyond those (a tie faiss may have cut anywhere)
    go to the torch search.
    """
    from mean_geo.retrieval.backend_choice import import_faiss

    faiss = import_faiss()
    if faiss is None:
        raise ConfigError("search backend 'faiss' needs faiss: pip install -e '.[faiss]'")
    wide = min(k + FAISS_TIE_MARGIN, gallery.shape[0])
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery.float().cpu().contiguous().numpy())
    scores, indices = index.search(query.float().cpu().contiguous().numpy(), wide)
    scores, indices = torch.from_numpy(scores), torch.from_numpy(indices).long()
    by_index = torch.argsort(indices, dim=1)
    scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    scores, indices = scores.gather(1, order), indices.gather(1, order)
    cut = scores[:, k - 1] == scores[:, -1] if wide > k else torch.zeros(len(scores), dtype=torch.bool)
    scores, indices = scores[:, :k].contiguous(), indices[:, :k].contiguous()
    if bool(cut.any()):
        rows = cut.nonzero().squeeze(1)
        again = topk_search(query[rows.to(query.device)].float(), gallery, k, gallery_chunk, query_chunk, "torch")
        scores[rows], indices[rows] = again[0].cpu(), again[1].cpu()
    return scores.to(query.device), indices.to(query.device)
