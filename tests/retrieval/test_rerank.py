"""k-reciprocal re-ranking: the batched torch version against the straightforward per-item version
of Zhong et al.'s algorithm (dense matrices, Python loops: ``official_k_reciprocal``), on small
random problems, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mean_geo.errors import ConfigError
from mean_geo.retrieval.official import official_k_reciprocal
from mean_geo.retrieval.rerank import RerankSettings, k_reciprocal_distances


def clustered(seed: int, n_query: int, n_gallery: int, dim: int = 6, places: int = 5, ties: bool = False):
    """Views scattered around a few place centres; ``ties``: entries in halves on 4 of the axes, so
    every score is a multiple of 1/4 (exact in any summation order) and many of them tie."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        pick = torch.stack([torch.randperm(dim, generator=g)[:4] for _ in range(n_query + n_gallery)])
        signs = torch.randint(0, 2, (n_query + n_gallery, 4), generator=g) * 2 - 1
        feats = torch.zeros(n_query + n_gallery, dim, dtype=torch.float64)
        feats.scatter_(1, pick, 0.5 * signs.double())
        feats[3] = feats[0]  # exact duplicates too
        feats[-1] = feats[1]
    else:
        centres = torch.randn(places, dim, generator=g, dtype=torch.float64)
        which = torch.randint(0, places, (n_query + n_gallery,), generator=g)
        feats = F.normalize(
            centres[which] + 0.6 * torch.randn(len(which), dim, generator=g, dtype=torch.float64), dim=1
        )
    return feats[:n_query], feats[n_query:]


@pytest.mark.parametrize(
    ("seed", "n_query", "n_gallery", "k1", "k2", "lam", "ties"),
    [
        (0, 30, 12, 20, 6, 0.3, False),  # the paper's parameters
        (1, 25, 20, 5, 3, 0.5, False),  # k1/2 = 2.5 rounds to 2, as np.around
        (2, 18, 9, 4, 1, 0.0, False),  # no query expansion; Jaccard only
        (3, 40, 10, 6, 4, 1.0, False),  # lambda 1: the original distance only
        (4, 24, 16, 7, 5, 0.3, True),  # many ties and duplicates
        (5, 30, 30, 9, 6, 0.3, True),
        (6, 3, 2, 20, 6, 0.3, False),  # k1 and k2 beyond the 5 items there are
        (7, 20, 8, 3, 6, 0.3, True),  # k2 beyond k1 + 1: the expansion reaches past N(i, k1)
    ],
)
def test_matches_the_per_item_reference(seed, n_query, n_gallery, k1, k2, lam, ties):
    q, g = clustered(seed, n_query, n_gallery, ties=ties)
    expected = official_k_reciprocal(q.numpy(), g.numpy(), k1, k2, lam)
    # small blocks, so that the blocked passes run many blocks of every kind
    got = k_reciprocal_distances(q, g, RerankSettings(k1, k2, lam), block_elements=64).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # the rankings are the same, ties included (distances equal to 1e-9 rank by gallery index)
    rank = lambda d: np.lexsort((np.tile(np.arange(d.shape[1]), (d.shape[0], 1)), np.round(d, 9)), axis=1)  # noqa: E731
    assert (rank(got) == rank(expected)).all()
    assert got.shape == (n_query, n_gallery)


def test_blocks_change_nothing():
    q, g = clustered(7, 50, 20)
    whole = k_reciprocal_distances(q, g, block_elements=1 << 24)
    blocked = k_reciprocal_distances(q, g, block_elements=97)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-12)


def test_reranking_helps_where_the_views_of_a_place_agree():
    """Drone views of a place gather around a point shifted from its tile (a cross-view gap), so a
    noisy view's nearest tile is sometimes another place's; its k-reciprocal neighbours — the other
    views of its place, which share their tile's neighbourhood — pull the right tile back up."""
    hits = {"plain": 0, "reranked": 0}
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        places, per_place, dim = 20, 10, 32
        tiles = F.normalize(torch.randn(places, dim, generator=g), dim=1)
        gap = 0.6 * F.normalize(torch.randn(places, dim, generator=g), dim=1)
        views = (tiles + gap).repeat_interleave(per_place, 0)
        q = F.normalize(views + 0.3 * torch.randn(places * per_place, dim, generator=g), dim=1)
        truth = torch.arange(places).repeat_interleave(per_place)
        hits["plain"] += int((q @ tiles.T).argmax(1).eq(truth).sum())
        hits["reranked"] += int(k_reciprocal_distances(q, tiles).argmin(1).eq(truth).sum())
    assert hits["reranked"] > hits["plain"] + 5, hits


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"k1": 0}, "eval.rerank_k1"), ({"k2": 1.5}, "eval.rerank_k2"), ({"lambda_value": 2}, "eval.rerank_lambda")],
)
def test_settings_are_checked(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        RerankSettings(**kwargs)
