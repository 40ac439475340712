"""The baselines' objectives against hand-computed cases (DSA, CAMP's part MSE, self-block InfoNCE
and its learnt weighting) and their totals against their authors' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mean_geo.errors import ConfigError
from mean_geo.losses import CAMPLoss, DACLoss, InfoNCELoss, Sample4GeoLoss
from mean_geo.losses.peers import dsa_loss
from mean_geo.models.mean import MEANOutput


def test_dsa_is_one_minus_the_mean_cosine_of_the_flattened_maps():
    a = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # (B=2, C=1, N=2)
    b = torch.tensor([[[0.0, 1.0]], [[2.0, 2.0]]])  # orthogonal, then parallel
    assert float(dsa_loss(a, b)) == pytest.approx(1 - (0 + 1) / 2)
    assert float(dsa_loss(a, -a)) == pytest.approx(2.0)


def test_self_block_infonce_hand_case():
    """Two orthonormal part vectors against themselves: logits s·I, smoothing 0.1 over 2 classes."""
    loss = InfoNCELoss(temperature=0.5, gather_distributed=False)  # s = 2
    p = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # normalised to the identity
    log_p_right, log_p_wrong = 2 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)
    expected = -(0.95 * log_p_right + 0.05 * log_p_wrong)  # both directions alike
    assert float(loss(p, p).detach()) == pytest.approx(expected)


def test_camp_total_and_the_gradient_of_its_learnt_weight():
    torch.manual_seed(0)
    sat, dro = torch.randn(3, 6), torch.randn(3, 6)
    loss = CAMPLoss(weight_part_mse=1.0, ece_weight=0.5)
    d, s = MEANOutput(torch.randn(3, 4), parts=dro), MEANOutput(torch.randn(3, 4), parts=sat)
    terms = loss(d, s, torch.arange(3))
    mse = F.mse_loss(F.normalize(sat, dim=-1), F.normalize(dro, dim=-1))
    torch.testing.assert_close(terms["loss_part_mse"], mse)
    torch.testing.assert_close(terms["loss_part_mse"], (2 - 2 * F.cosine_similarity(sat, dro)).sum() / 18)
    block = InfoNCELoss(gather_distributed=False)
    bs, bd = block(sat, sat), block(dro, dro)
    expected = terms["loss_infonce"] + mse + 0.25 * bs + 1.0 * bd  # 0.5·w, 0.5/w at w = 0.5
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    torch.testing.assert_close(loss.ece_weight.grad, (0.5 * bs - 0.5 / 0.25 * bd).detach())  # d/dw
    assert loss.block_infonce.logit_scale.grad is not None and loss.infonce.logit_scale.grad is not None


def test_camp_zero_weights_skip_terms_and_a_model_without_parts_is_refused():
    loss = CAMPLoss(weight_part_mse=0.0, weight_blocks=0.0)
    d, s = (
        MEANOutput(torch.randn(2, 4), parts=torch.randn(2, 6)),
        MEANOutput(torch.randn(2, 4), parts=torch.randn(2, 6)),
    )
    assert set(loss(d, s, torch.arange(2))) == {"loss_infonce", "loss"}
    with pytest.raises(ConfigError, match="needs a model with part blocks"):
        loss(MEANOutput(torch.randn(2, 4)), MEANOutput(torch.randn(2, 4)), torch.arange(2))
    with pytest.raises(ConfigError, match="loss.ece_weight=0: must be > 0"):
        CAMPLoss(ece_weight=0)


def test_dac_total_is_infonce_plus_tenth_ce_plus_point_six_dsa():
    torch.manual_seed(0)
    labels = torch.tensor([0, 2, 1])

    def view():
        return MEANOutput(torch.randn(3, 4), logits=[torch.randn(3, 3) for _ in range(3)], aligned=torch.randn(3, 5, 4))

    d, s = view(), view()
    terms = DACLoss()(d, s, labels)
    ce = (
        sum(F.cross_entropy(lg, labels) for lg in s.logits) / 3
        + sum(F.cross_entropy(lg, labels) for lg in d.logits) / 3
    )
    torch.testing.assert_close(terms["loss_ce"], ce)
    torch.testing.assert_close(terms["loss_dsa"], dsa_loss(s.aligned, d.aligned))
    torch.testing.assert_close(terms["loss"], terms["loss_infonce"] + 0.1 * ce + 0.6 * terms["loss_dsa"])
    with pytest.raises(ConfigError, match="loss.weight_dsa=-1: must be >= 0"):
        DACLoss(weight_dsa=-1)


def test_sample4geo_is_infonce_alone_and_needs_no_branch():
    d, s = MEANOutput(torch.randn(3, 4)), MEANOutput(torch.randn(3, 4))
    terms = Sample4GeoLoss()(d, s, torch.arange(3))
    assert set(terms) == {"loss_infonce", "loss"} and torch.equal(terms["loss"], terms["loss_infonce"])
    assert Sample4GeoLoss.model_branches({}) == {"use_gee": False, "use_cea": False}
    assert DACLoss.model_branches({"weight_ce": 0.0}) == {"use_gee": False, "use_cea": True}
