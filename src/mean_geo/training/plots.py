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

from mean_geo.retrieval.search import topk_search  # noqa: E402
from mean_geo.retrieval.strips import HIT, MISS, QUERY, Cell, write_strips  # noqa: E402


def recall_curve(curves: dict[str, Sequence[float]], out: Path) -> None:
    """R@1..R@K of every convention (``d2s``, ``d2s_rerank``, ``d2s_multi_mean``, ``s2d``, …) on one
    figure: the curves the evaluation computed, not a second evaluation."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, values in curves.items():
        ks = range(1, len(values) + 1)
        style = "--" if name.startswith("s2d") else "-"
        ax.plot(ks, values, style, marker="o", ms=3, label=name)
    ax.set(xlabel="K", ylabel="Recall@K (%)", ylim=(0, 101), title="Recall@K per convention")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def error_histogram(errors_m: dict[str, torch.Tensor], out: Path) -> None:
    """How far the top-1 tile lies from where the drone was, per convention (metres, log bins; a
    correct place counts 0 m and is shown in the first bin)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    largest = max(float(e.max()) for e in errors_m.values())
    bins = np.concatenate([[0.0], np.geomspace(1.0, max(largest, 10.0) * 1.05, 30)])
    for name, errors in errors_m.items():
        values = errors.double().clamp(min=0.5).numpy()  # 0 m (the right tile) into the first bin
        ax.hist(
            values,
            bins=bins,
            histtype="step",
            linewidth=1.5,
            label=f"{name} (median {np.median(errors.numpy()):.0f} m)",
        )
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set(xlabel="distance of the top-1 tile from the drone (m)", ylabel="queries", title="Localisation error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def corruption_heatmap(table: dict[str, dict[int, float]], clean: float, out: Path, metric: str = "R@1") -> None:
    """Rows: corruptions, columns: severities, cells: ``metric`` under that corruption (the clean
    value in the title); darker = a larger drop."""
    names = list(table)
    severities = sorted({s for row in table.values() for s in row})
    grid = np.array([[table[n].get(s, np.nan) for s in severities] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(severities), 0.8 + 0.45 * len(names)))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(clean, float(np.nanmax(grid))), aspect="auto")
    for (r, c), value in np.ndenumerate(grid):
        ax.text(
            c, r, f"{value:.1f}", ha="center", va="center", fontsize=8, color="white" if value < clean / 2 else "black"
        )
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="severity", title=f"D→S {metric} under corruption (clean {clean:.1f} %)")
    fig.colorbar(image, ax=ax, label=f"{metric} (%)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


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
