"""The evaluator against the slow per-query loop written like the official script (the same
reference the benchmark times: :mod:`mean_geo.retrieval.official`)."""

import numpy as np
import pytest
import torch

from mean_geo.retrieval.evaluate import evaluate
from mean_geo.retrieval.official import official_evaluate as reference


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_on_random_problems(seed, drop):
    rng = np.random.default_rng(seed)
    n_loc, dim = 40, 16
    centres = unit(rng.normal(size=(n_loc + 15, dim)))  # 15 gallery-only distractor places
    qid = rng.integers(0, n_loc, size=300)
    gid = np.concatenate([np.repeat(np.arange(n_loc + 15), 3), [5, 5]])  # several positives each
    q = unit(centres[qid] + 0.9 * rng.normal(size=(len(qid), dim))).astype(np.float32)
    g = unit(centres[gid] + 0.9 * rng.normal(size=(len(gid), dim))).astype(np.float32)
    expected = reference(q, qid, g, gid, drop)
    for chunk in (1 << 24, 7 * len(gid)):  # one chunk, and chunks of 7 queries
        got = evaluate(
            torch.from_numpy(q), qid, torch.from_numpy(g), gid, drop_unmatched_gallery=drop, max_chunk_elements=chunk
        )
        assert got == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("drop", [True, False])
@pytest.mark.parametrize("quantised", [False, True])  # True: coarse values, many exact ties
def test_one_gallery_item_per_place_matches_reference(drop, quantised):
    """D→S shape: the positive is found by id lookup; queries of places without a gallery item and
    gallery-only places included, gallery not in id order."""
    rng = np.random.default_rng(3)
    n_loc, dim = 30, 8
    centres = unit(rng.normal(size=(n_loc, dim)))
    qid = rng.integers(0, n_loc + 4, size=200)  # places 30..33 have no gallery item
    gid = rng.permutation(n_loc)
    q = unit(np.concatenate([centres, unit(rng.normal(size=(4, dim)))])[qid] + 0.8 * rng.normal(size=(200, dim)))
    g = unit(centres[gid] + 0.8 * rng.normal(size=(n_loc, dim)))
    if quantised:
        q, g = np.round(q * 2) / 2, np.round(g * 2) / 2
    q, g = q.astype(np.float32), g.astype(np.float32)
    expected = reference(q, qid, g, gid, drop)
    for chunk in (1 << 24, 9 * n_loc):
        got = evaluate(
            torch.from_numpy(q), qid, torch.from_numpy(g), gid, drop_unmatched_gallery=drop, max_chunk_elements=chunk
        )
        assert got == pytest.approx(expected, abs=1e-9)
    keep = qid < n_loc  # every query has its positive: the lookup path for every chunk
    got = evaluate(torch.from_numpy(q[keep]), qid[keep], torch.from_numpy(g), gid, drop_unmatched_gallery=drop)
    assert got == pytest.approx(reference(q[keep], qid[keep], g, gid, drop), abs=1e-9)


def test_no_gallery_item_of_any_query_place_is_a_miss_for_all():
    q, g = torch.eye(3)[:2], torch.eye(3)
    got = evaluate(q, [7, 8], g, [0, 1, 2], drop_unmatched_gallery=True)  # every gallery item dropped
    assert got["R@1"] == 0.0 and got["AP"] == 0.0


def test_hand_made_single_positive_ranks():
    # gallery: one item per location 0..3; query of location 3 ranked at 0-based r=2 -> AP = 1/(2*3)
    g = torch.eye(4)
    q = torch.tensor([[0.6, 0.5, 0.0, 0.4], [0.0, 0.0, 0.0, 1.0]])
    got = evaluate(q, [3, 3], g, [0, 1, 2, 3], ks=(1, 2, 3), drop_unmatched_gallery=False)
    assert got["R@1"] == pytest.approx(50.0)
    assert got["R@2"] == pytest.approx(50.0) and got["R@3"] == pytest.approx(100.0)
    assert got["AP"] == pytest.approx(100 * (1 / 6 + 1) / 2)


def test_ties_keep_gallery_order_and_several_positives():
    # all scores tie: ranked order is gallery order [1, 0, 1, 0]; query location 0 -> positives at r=1, 3
    g = torch.ones(4, 2) / 2**0.5
    q = torch.ones(1, 2) / 2**0.5
    got = evaluate(q, [0], g, [1, 0, 1, 0], ks=(1, 2), drop_unmatched_gallery=False)
    ap = ((0 / 1 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2
    assert got["R@1"] == 0.0 and got["R@2"] == 100.0
    assert got["AP"] == pytest.approx(100 * ap)


def test_query_without_positive_counts_as_a_miss():
    g = torch.eye(3)
    q = torch.eye(3)[:2]
    # the second query's location (9) is nowhere in the gallery
    got = evaluate(q, [0, 9], g, [0, 1, 2], drop_unmatched_gallery=False)
    assert got["R@1"] == 50.0 and got["AP"] == 50.0


def test_dropping_unmatched_gallery_removes_distractors_from_the_ranking():
    # a distractor (location 7) outranks the positive unless it is dropped
    g = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    q = torch.tensor([[0.7, 0.714]])
    kept = evaluate(q, [0], g, [0, 7], drop_unmatched_gallery=False, ks=(1,))
    dropped = evaluate(q, [0], g, [0, 7], drop_unmatched_gallery=True, ks=(1,))
    assert kept["R@1"] == 0.0 and kept["AP"] == pytest.approx(25.0)
    assert dropped["R@1"] == 100.0 and dropped["AP"] == 100.0


def test_r1_percent_reads_the_cmc_at_round_of_one_percent():
    # 951 gallery items -> index round(9.51) = 10, i.e. a first hit at 0-based rank 10 counts
    n = 951
    g = torch.zeros(n, n)
    g[torch.arange(n), torch.arange(n)] = 1.0
    scores = torch.linspace(1.0, 0.0, n)
    q = scores[None, :]  # gallery item j has score scores[j]
    at10 = evaluate(q, [10], g, list(range(n)), drop_unmatched_gallery=False)
    at11 = evaluate(q, [11], g, list(range(n)), drop_unmatched_gallery=False)
    assert at10["R@1%"] == 100.0 and at10["R@10"] == 0.0
    assert at11["R@1%"] == 0.0


# (direct_max, candidate fraction): binary search, direct count, candidates only
@pytest.mark.parametrize("path", [(0, 0.0), (1000, 0.0), (0, 1.0)], ids=["search", "direct", "candidates"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_positive_ranks_equal_the_stable_sort_with_many_ties(path, seed):
    from mean_geo.retrieval.evaluate import positive_ranks

    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(-2, 3, (6, 40), generator=gen).float() * 0.5  # heavy ties, negatives
    if seed == 1:
        scores[scores == 0] = -0.0  # a stable sort sees -0.0 == 0.0
    good = torch.rand(6, 40, generator=gen) < 0.3
    direct_max, fraction = path
    rows, ranks = positive_ranks(
        scores, good, max_elements=64, direct_max_positives=direct_max, max_candidate_fraction=fraction
    )
    order = np.argsort(-scores.numpy(), axis=1, kind="stable")
    position = np.argsort(order, axis=1)  # rank of each gallery item in its row
    r, c = np.nonzero(good.numpy())
    assert rows.tolist() == r.tolist()
    assert ranks.tolist() == position[r, c].tolist()


def test_candidate_path_falls_back_when_positives_score_low():
    from mean_geo.retrieval import evaluate as ev

    scores = torch.linspace(1.0, 0.0, 50)[None, :].repeat(2, 1)
    good = torch.zeros(2, 50, dtype=torch.bool)
    good[:, [3, 45]] = True  # the lowest positive is below 90 % of the row
    assert ev._ranks_among_candidates(scores, *good.nonzero(as_tuple=True), scores[good], 0.25) is None
    rows, ranks = ev.positive_ranks(scores, good, max_candidate_fraction=0.25)
    assert ranks.tolist() == [3, 45, 3, 45]
    good[:, 45] = False
    good[:, 5] = True
    assert ev._ranks_among_candidates(scores, *good.nonzero(as_tuple=True), scores[good], 0.25).tolist() == [3, 5] * 2


def test_single_positive_per_query_with_ties():
    from mean_geo.retrieval.evaluate import positive_ranks

    gen = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 3, (8, 30), generator=gen).float()
    good = torch.zeros(8, 30, dtype=torch.bool)
    good[torch.arange(8), torch.randint(0, 30, (8,), generator=gen)] = True
    rows, ranks = positive_ranks(scores, good)
    position = np.argsort(np.argsort(-scores.numpy(), axis=1, kind="stable"), axis=1)
    r, c = np.nonzero(good.numpy())
    assert rows.tolist() == r.tolist() and ranks.tolist() == position[r, c].tolist()
