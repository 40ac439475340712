"""A retrieval of known quality, for testing and showing decoders of flights without a model.

Each frame's top-k is drawn from the gallery's tiles: the tile nearest the frame's true position is
the top-1 with probability ``p_right``; otherwise it is at a random lower rank (4 times in 5) or not
among the k at all; the other candidates are random tiles, and the scores descend with noise.  This
is how the flight tests and docs/img/track.png measure what the decoders add to a retrieval whose
per-frame top-1 is right a chosen share of the time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mean_geo.data.coordinates import Coords
from mean_geo.inference.localization import Match
from mean_geo.localization.track import to_local_m


def simulated_matches(
    truth: Sequence[Coords], tiles: np.ndarray, p_right: float, k: int, rng: np.random.Generator
) -> list[list[Match]]:
    """Each frame's top-k tiles, as :func:`~mean_geo.inference.localization.localize` returns them.

    Args:
        truth: each frame's true lat/lon.
        tiles: ``(G, 2)`` the gallery's tile centres (lat/lon), ``G > k``.
        p_right: how often the nearest tile is the top-1.
        k: candidates per frame.
        rng: the random source (the same seed gives the same retrieval).

    Returns:
        ``[[Match, …], …]``, best first; tile ids are ``t<index>``.
    """
    origin = (float(tiles[:, 0].mean()), float(tiles[:, 1].mean()))
    grid = to_local_m(tiles, origin)
    out = []
    for point in truth:
        here = to_local_m(np.asarray(point, dtype=np.float64), origin)
        right = int(np.argmin(np.hypot(*(grid - here).T)))
        others = [int(i) for i in rng.permutation(len(tiles)) if i != right][:k]
        if rng.random() < p_right:
            order = [right, *others[: k - 1]]
        elif rng.random() < 0.8:
            rank = int(rng.integers(1, k))
            order = [*others[:rank], right, *others[rank : k - 1]]
        else:
            order = others
        scores = np.sort(rng.normal(0.5, 0.04, k))[::-1]
        out.append(
            [
                Match(r + 1, f"t{i}", float(s), f"t{i}.png", float(tiles[i, 0]), float(tiles[i, 1]))
                for r, (i, s) in enumerate(zip(order, scores, strict=True))
            ]
        )
    return out
