"""Multi-query evaluation and flip-TTA: against straightforward per-group references (ties
included), and through `python -m mean_geo.eval` into metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mean_geo import eval as eval_entry
from mean_geo.retrieval.evaluate import evaluate_scores
from mean_geo.retrieval.multi_query import group_scores, query_groups
from mean_geo.retrieval.official import official_evaluate_scores
from tests.helpers.config import compose_config, quiet_overrides


def problem(seed: int, n_places: int = 12, per_place: int = 5, quantise: bool = True):
    """Drone queries of the first 8 places (several altitudes), a gallery of all 12; embeddings on
    a coarse grid so that scores tie."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_places, 8, generator=g)
    q_ids = torch.arange(8).repeat_interleave(per_place)
    q = F.normalize(centres[q_ids] + 1.5 * torch.randn(len(q_ids), 8, generator=g), dim=1)
    gallery = F.normalize(centres + 0.5 * torch.randn(n_places, 8, generator=g), dim=1)
    if quantise:
        q, gallery = (torch.round(t * 4) / 4 for t in (q, gallery))
    altitudes = torch.tensor([150, 200])[torch.arange(len(q_ids)) % 2]
    return q, q_ids, altitudes, gallery, torch.arange(n_places)


def reference_scores(q, q_ids, altitudes, gallery, mode):
    """One group at a time, in Python: sorted (place, altitude) keys, as the groups are numbered."""
    keys = sorted({(int(i), int(a)) for i, a in zip(q_ids, altitudes, strict=True)})
    rows, place = [], []
    for key in keys:
        members = [j for j in range(len(q_ids)) if (int(q_ids[j]), int(altitudes[j])) == key]
        scores = (q[members] @ gallery.T).numpy().astype(np.float64)
        if mode == "mean":
            mean = q[members].sum(0)
            row = (mean / mean.norm()) @ gallery.T
        elif mode == "max":
            row = scores.max(axis=0)
        else:
            votes = np.zeros(gallery.shape[0])
            for s in scores:
                votes[int(np.argmax(s))] += 1  # the first of tied maxima, as torch.argmax
            row = 4 * votes + scores.max(axis=0)
        rows.append(np.asarray(row, dtype=np.float64))
        place.append(key[0])
    return np.stack(rows), np.array(place)


@pytest.mark.parametrize("mode", ["mean", "max", "vote"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_scores_and_metrics_match_a_per_group_reference(mode, seed):
    q, q_ids, altitudes, gallery, g_ids = problem(seed)
    group, group_ids = query_groups(q_ids, altitudes)
    got = group_scores(q, group, gallery, mode)
    expected, expected_ids = reference_scores(q, q_ids, altitudes, gallery, mode)
    assert torch.equal(group_ids, torch.from_numpy(expected_ids))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
    for drop in (True, False):
        ours = evaluate_scores(got, group_ids, g_ids, drop_unmatched_gallery=drop)
        theirs = official_evaluate_scores(got.numpy(), group_ids.numpy(), g_ids.numpy(), drop_unmatched=drop)
        assert ours == pytest.approx(theirs, abs=1e-9)


def test_ties_are_present_in_the_problems():
    q, q_ids, altitudes, gallery, _ = problem(0)
    scores = (q @ gallery.T).flatten()
    assert len(torch.unique(scores)) < len(scores) // 2


def test_groups_are_per_place_or_per_place_and_altitude():
    ids = torch.tensor([3, 3, 5, 5, 3])
    group, places = query_groups(ids)
    assert places.tolist() == [3, 5] and group.tolist() == [0, 0, 1, 1, 0]
    group, places = query_groups(ids, torch.tensor([150, 200, 150, 150, 150]))
    assert places.tolist() == [3, 3, 5] and group.tolist() == [0, 1, 2, 2, 0]


def test_votes_outrank_scores_and_ties_fall_back_to_the_best_score():
    gallery = torch.eye(3)
    q = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.6, 0.8]])  # two votes for item 2
    scores = group_scores(q, torch.zeros(3, dtype=torch.long), gallery, "vote")
    assert scores.argsort(descending=True)[0].tolist() == [2, 0, 1]


@pytest.mark.slow
def test_eval_reports_every_convention_and_records_it(smoke_run, tmp_path, data_dir):
    out, metrics, _ = smoke_run
    ckpt = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    overrides = [
        f"ckpt={ckpt}",
        "eval.multi_query=vote",
        "eval.flip_tta=true",
        "eval.rerank=true",
        "eval.rerank_k1=4",
        "eval.corruptions=[fog,jpeg]",
        "eval.severities=[1,5]",
    ]
    eval_entry.run(compose_config("eval", [*overrides, *quiet_overrides(tmp_path, data_dir)]))
    run = tmp_path / "out"
    payload = json.loads((run / "metrics.json").read_text())
    protocol = payload["protocol"]
    assert protocol["multi_query"] == "vote" and protocol["flip_tta"] is True
    assert protocol["rerank"] == {"k1": 4, "k2": 6, "lambda_value": 0.3}
    assert protocol["corruptions"] == ["fog", "jpeg"] and protocol["severities"] == [1, 5]
    keys = set(payload["metrics"])
    conventions = ["d2s", "d2s_rerank", "d2s_multi_vote", "d2s_multi_vote_rerank", "s2d", "s2d_rerank"]
    assert {f"test/{c}/{k}" for c in conventions for k in ("R@1", "AP")} <= keys
    assert {"test/d2s/Dis@1", "test/d2s_multi_vote_rerank/Acc@50m"} <= keys  # the world has coordinates
    assert not any(k.startswith("test/s2d_multi") for k in keys)  # one satellite image per place
    assert set(payload["recall_curve"]) == set(conventions)
    # robustness: one row per corruption and severity, the drop measured from the clean queries
    rows = payload["corruptions"]
    assert [(r["corruption"], r["severity"]) for r in rows] == [("fog", 1), ("fog", 5), ("jpeg", 1), ("jpeg", 5)]
    for r in rows:
        assert r["R@1"] == payload["metrics"][f"test/d2s_corrupt/{r['corruption']}_s{r['severity']}/R@1"]
        assert r["drop_R@1"] == pytest.approx(payload["metrics"]["test/d2s/R@1"] - r["R@1"])
    assert payload["metrics"]["test/d2s_corrupt/mean_drop/AP"] == pytest.approx(sum(r["drop_AP"] for r in rows) / 4)
    assert (run / "corruptions.csv").read_text().splitlines()[0] == "corruption,severity,R@1,AP,drop_R@1,drop_AP"
    for figure in ("recall_at_k", "distance_errors", "corruptions"):
        assert (run / "plots" / f"{figure}.png").stat().st_size > 1000


def test_flip_tta_sums_the_embeddings_of_the_image_and_its_mirror():
    from mean_geo.losses import MEANLoss
    from mean_geo.models.mean import MEAN
    from mean_geo.retrieval.options import EvalOptions
    from mean_geo.training.lit_module import MEANLitModule

    torch.manual_seed(0)
    model = MEAN(4, backbone="test_convnext", use_gee=False, use_cea=False).eval()
    lit = MEANLitModule(model, MEANLoss(weight_cda=0.0, weight_ce=0.0), eval_options=EvalOptions(flip_tta=True))
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        expected = F.normalize(model.features(x)[2] + model.features(x.flip(-1))[2], dim=-1)
        assert torch.allclose(lit.embed(x), expected, atol=1e-6)
        symmetric = torch.cat([x[..., :16], x[..., :16].flip(-1)], dim=-1)  # its own mirror image
        assert torch.allclose(lit.embed(symmetric), model(symmetric), atol=1e-5)
        assert not torch.allclose(lit.embed(x), model(x), atol=1e-4)
