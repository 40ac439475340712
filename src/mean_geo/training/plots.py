"""Result figures written into a run directory: recall@K curves, query → top-k strips (paper Fig. 5
style, green = correct place, red = wrong) and a 2-D map of drone/satellite embeddings (Fig. 4 style).

Inputs are tensors and file paths only (no loaders, no Lightning).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mean_geo.retrieval.evaluate import evaluate  # noqa: E402
from mean_geo.retrieval.search import topk_search  # noqa: E402
from mean_geo.retrieval.strips import HIT, MISS, QUERY, Cell, write_strips  # noqa: E402


def recall_curve(
    curves: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    out: Path,
    max_k: int = 20,
    drop_unmatched_gallery: bool = True,
) -> dict[str, list[float]]:
    """Plot R@1..R@max_k per direction; returns the curves.  ``curves[name] = (q, qid, g, gid)``."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    values: dict[str, list[float]] = {}
    for name, (q, qid, g, gid) in curves.items():
        ks = tuple(range(1, min(max_k, len(g)) + 1))
        res = evaluate(q, qid, g, gid, ks=ks, drop_unmatched_gallery=drop_unmatched_gallery)
        values[name] = [res[f"R@{k}"] for k in ks]
        ax.plot(ks, values[name], marker="o", ms=3, label=name)
    ax.set(xlabel="K", ylabel="Recall@K (%)", ylim=(0, 101), title="Recall@K")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return values


def retrieval_strips(
    query_paths: Sequence[Path],
    query_ids: torch.Tensor,
    query_emb: torch.Tensor,
    gallery_paths: Sequence[Path],
    gallery_ids: torch.Tensor,
    gallery_emb: torch.Tensor,
    out: Path,
    num_queries: int = 6,
    k: int = 5,
    size: int = 96,
) -> None:
    """One row per query: the query, then its top-k gallery images framed green (right) / red."""
    n = min(num_queries, len(query_paths))
    picks = np.linspace(0, len(query_paths) - 1, n).round().astype(int)
    _, top = topk_search(query_emb[picks].float(), gallery_emb.float(), k=min(k, len(gallery_paths)))
    rows = []
    for row, qi in enumerate(picks):
        hits = [int(gallery_ids[gi]) == int(query_ids[qi]) for gi in top[row].tolist()]
        rows.append(
            [Cell(query_paths[qi], frame=QUERY)]
            + [
                Cell(gallery_paths[gi], frame=HIT if ok else MISS)
                for gi, ok in zip(top[row].tolist(), hits, strict=True)
            ]
        )
    write_strips(rows, out, size)


def embedding_map(
    drone_emb: torch.Tensor,
    drone_ids: torch.Tensor,
    sat_emb: torch.Tensor,
    sat_ids: torch.Tensor,
    out: Path,
    num_locations: int = 8,
) -> None:
    """PCA of drone (dots) and satellite (stars) embeddings of a few places, one colour per place."""
    # places seen from both views (galleries also hold places that no query shows)
    shared = torch.unique(drone_ids)
    places = shared[torch.isin(shared, sat_ids)][:num_locations]
    d_mask, s_mask = torch.isin(drone_ids, places), torch.isin(sat_ids, places)
    feats = torch.cat([drone_emb[d_mask], sat_emb[s_mask]]).float()
    if feats.shape[0] < 3:
        return
    centred = feats - feats.mean(0)
    _, _, v = torch.pca_lowrank(centred, q=2, center=False)
    xy = (centred @ v[:, :2]).numpy()
    nd = int(d_mask.sum())
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, place in enumerate(places.tolist()):
        c = colours(i % 10)
        dm = (drone_ids[d_mask] == place).numpy()
        sm = (sat_ids[s_mask] == place).numpy()
        ax.scatter(xy[:nd][dm, 0], xy[:nd][dm, 1], s=12, color=c, alpha=0.7)
        ax.scatter(xy[nd:][sm, 0], xy[nd:][sm, 1], s=160, color=c, marker="*", edgecolors="k")
    ax.set(title="Embeddings (PCA): drone ● satellite ★", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
