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
    # the view: the true path where known (else the offline track), so far-off wrong tiles do not
    # shrink it to a dot; what falls outside is counted in the legend
    framed = to_local_m(truth, origin) if truth is not None else local["offline"]
    lo, hi = framed.min(axis=0), framed.max(axis=0)
    margin = 0.25 * max(float((hi - lo).max()), 200.0)
    lo, hi = lo - margin, hi + margin
    grid = to_local_m(tiles, origin)
    near = np.all((grid >= lo) & (grid <= hi), axis=1)
    outside = int(np.sum(~np.all((local["top1"] >= lo) & (local["top1"] <= hi), axis=1)))
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=110)
    ax.scatter(*grid[near].T, s=5, c="#d0d0d0", label="tile centres", zorder=1)
    if truth is not None:
        ax.plot(*framed.T, c="black", lw=2.4, label="truth", zorder=2)
    ax.scatter(
        *local["top1"].T, s=16, marker="x", c="#d62728", lw=1, label=f"per-frame top-1 ({outside} off view)", zorder=3
    )
    ax.scatter(*local["online"].T, s=10, c="#ff7f0e", label="online filter", zorder=4)
    ax.plot(*local["offline"].T, c="#1f77b4", lw=1.4, marker=".", ms=4, label="offline smoother", zorder=5)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
