"""A picture of a flight: the gallery's tile centres, each frame's own top-1, both decoded tracks
and, where known, the true path; in metres east/north of the flight's centre."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mean_geo.localization.track import to_local_m


def plot_track(
    out: Path,
    tiles: np.ndarray,
    top1: np.ndarray,
    online: np.ndarray,
    offline: np.ndarray,
    truth: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Write the picture as a PNG.

    Args:
        out: the file.
        tiles: ``(G, 2)`` lat/lon of the gallery's tiles (drawn near the flight only).
        top1: ``(n, 2)`` lat/lon of each frame's top-1 tile.
        online: ``(n, 2)`` the online filter's track.
        offline: ``(n, 2)`` the offline smoother's track.
        truth: ``(n, 2)`` where the frames were taken, when known.
        title: the heading.

    Returns:
        ``out``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = (float(np.mean(offline[:, 0])), float(np.mean(offline[:, 1])))
    local = {k: to_local_m(v, origin) for k, v in {"top1": top1, "online": online, "offline": offline}.items()}
    shown = np.concatenate(list(local.values()) + ([to_local_m(truth, origin)] if truth is not None else []))
    lo, hi = shown.min(axis=0), shown.max(axis=0)
    margin = 0.1 * max(float((hi - lo).max()), 100.0)
    grid = to_local_m(tiles, origin)
    near = np.all((grid >= lo - margin) & (grid <= hi + margin), axis=1)
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=110)
    ax.scatter(*grid[near].T, s=6, c="#c8c8c8", label="tile centres", zorder=1)
    if truth is not None:
        ax.plot(*to_local_m(truth, origin).T, c="black", lw=2.2, label="truth", zorder=2)
    ax.scatter(*local["top1"].T, s=14, marker="x", c="#d62728", label="per-frame top-1", zorder=3)
    ax.plot(*local["online"].T, c="#ff7f0e", lw=1.2, ls="--", label="online filter", zorder=4)
    ax.plot(*local["offline"].T, c="#1f77b4", lw=1.6, label="offline smoother", zorder=5)
    ax.set_xlim(lo[0] - margin, hi[0] + margin)
    ax.set_ylim(lo[1] - margin, hi[1] + margin)
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
