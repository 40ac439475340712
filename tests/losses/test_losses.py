import math

import numpy as np
import pytest
import torch

from mean_geo.errors import ConfigError
from mean_geo.losses import CDALoss, IdentityLoss, InfoNCELoss, MEANLoss
from mean_geo.models.mean import MEAN, MEANOutput


def np_ce(logits: np.ndarray, target: np.ndarray, smoothing: float = 0.0) -> float:
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    k = logits.shape[1]
    q = np.full_like(logp, smoothing / k)
    q[np.arange(len(target)), target] += 1 - smoothing
    return float(-(q * logp).sum(1).mean())


def test_infonce_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = (1 / 0.07) * an @ bn.T
    expected = (np_ce(logits, np.arange(5), 0.1) + np_ce(logits.T, np.arange(5), 0.1)) / 2
    loss = InfoNCELoss(temperature=0.07, label_smoothing=0.1)
    got = loss(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert loss.temperature == pytest.approx(0.07)


def test_infonce_hand_case_two_perfect_pairs():
    # orthogonal unit pairs: logits = s*I; row CE with smoothing eps over 2 classes
    s, eps = math.exp(1.0), 0.1
    loss = InfoNCELoss(temperature=math.exp(-1.0), label_smoothing=eps)
    e = torch.eye(2)
    p_pos = math.exp(s) / (math.exp(s) + 1)
    expected = -((1 - eps / 2) * math.log(p_pos) + (eps / 2) * math.log(1 - p_pos))
    assert loss(e, e).item() == pytest.approx(expected, rel=1e-6)


def test_identity_loss_is_the_mean_over_heads():
    rng = np.random.default_rng(1)
    heads = [rng.normal(size=(4, 6)) for _ in range(3)]
    y = np.array([0, 5, 2, 2])
    expected = np.mean([np_ce(h, y) for h in heads])
    got = IdentityLoss()([torch.tensor(h) for h in heads], torch.tensor(y))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_cda_released_is_twice_one_minus_cosine():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    fa, fb = a.reshape(3, -1), b.reshape(3, -1)
    cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    ta, tb = torch.tensor(a), torch.tensor(b)
    released = CDALoss("released")(ta, tb).item()
    assert released == pytest.approx(2 * (1 - cos.mean()), rel=1e-6)
    na, nb = fa / np.linalg.norm(fa, axis=1, keepdims=True), fb / np.linalg.norm(fb, axis=1, keepdims=True)
    assert released == pytest.approx(((na - nb) ** 2).sum(1).mean(), rel=1e-6)  # = MSE of unit maps
    paper = CDALoss("paper")(ta, tb).item()
    assert paper == pytest.approx((1 - cos.mean()) + ((fa - fb) ** 2).mean(), rel=1e-6)
    assert CDALoss("released")(ta, ta).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError):
        CDALoss("other")


def test_total_is_the_weighted_sum_and_gradients_reach_every_active_part():
    torch.manual_seed(0)
    model = MEAN(6, backbone="test_convnext").train()
    loss = MEANLoss(weight_cda=1.3, weight_infonce=1.0, weight_ce=0.1)
    drone, sat = model(torch.randn(4, 3, 64, 64)), model(torch.randn(4, 3, 64, 64))
    terms = loss(drone, sat, torch.tensor([0, 1, 2, 3]))
    expected = 1.3 * terms["loss_cda"] + terms["loss_infonce"] + 0.1 * terms["loss_ce"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    terms["loss"].backward()
    assert loss.infonce.logit_scale.grad is not None and loss.infonce.logit_scale.grad != 0
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []  # every built parameter is used: DDP needs no find_unused_parameters


def test_zero_weight_terms_are_skipped_and_missing_branches_refused():
    out = MEANOutput(embedding=torch.randn(2, 8, requires_grad=True))
    terms = MEANLoss(weight_cda=0, weight_ce=0)(out, out, torch.tensor([0, 1]))
    assert set(terms) == {"loss_infonce", "loss"}
    with pytest.raises(ConfigError, match="without the CEA"):
        MEANLoss(weight_ce=0)(out, out, torch.tensor([0, 1]))
