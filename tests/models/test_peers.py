"""The baselines' new pieces against hand-built cases: CAMP's heat-sorted part blocks and position
embedding, DAC's triplet-attention gate and DSA; and that each baseline embeds as its authors do
(the backbone's pooled, LayerNorm'ed vector, L2-normalised)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mean_geo.models.attention_heads import AttentionGate, ClassBlock, TripletAttentionHeads
from mean_geo.models.dsa import DomainSpaceAlignment
from mean_geo.models.parts import PositionEmbedding, heat_sorted_blocks
from mean_geo.models.peers import CAMP, DAC, Sample4Geo


def test_heat_sorted_blocks_hand_case():
    # 4 tokens of 2 channels; heat (channel mean) = 1.0, 4.0, -1.0, 2.5 -> order 1, 3, 0, 2
    tokens = torch.tensor([[0.0, 2.0], [3.0, 5.0], [-2.0, 0.0], [2.0, 3.0]])  # (N, C)
    fmap = tokens.T.reshape(1, 2, 2, 2)  # (B, C, H, W), tokens in raster order
    got = heat_sorted_blocks(fmap, blocks=3)  # runs of 1, 1 and 2 tokens (the last takes the rest)
    expected = torch.cat([tokens[1], tokens[3], (tokens[0] + tokens[2]) / 2])
    torch.testing.assert_close(got, expected[None])


def test_heat_sorted_blocks_run_lengths_at_the_authors_size():
    fmap = torch.randn(2, 8, 12, 12)
    got = heat_sorted_blocks(fmap, 3)
    tokens = fmap.flatten(2).transpose(1, 2)
    for b in range(2):
        order = tokens[b].mean(-1).argsort(descending=True)
        runs = [tokens[b][order[i : i + 48]].mean(0) for i in (0, 48, 96)]  # 48 / 48 / 48 of 144
        torch.testing.assert_close(got[b], torch.cat(runs))
    with pytest.raises(ValueError, match="2 tokens cannot make 3"):
        heat_sorted_blocks(torch.randn(1, 4, 1, 2), 3)


def test_position_embedding_is_added_with_its_scale_and_resized_for_other_maps():
    pos = PositionEmbedding(channels=3, grid=4, scale=0.25)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(pos(x), x + 0.25 * pos.embedding)
    assert pos(torch.zeros(1, 3, 2, 2)).shape == (1, 3, 2, 2)  # resized (bicubic) for a smaller map
    (pos(x).sum()).backward()
    torch.testing.assert_close(pos.scale.grad, pos.embedding.detach().sum() * 2)


def test_attention_gate_pools_over_axis_one_and_scales_by_a_sigmoid():
    gate = AttentionGate().eval()  # BatchNorm at its initial statistics: identity
    with torch.no_grad():
        gate.conv.weight.zero_()
        gate.conv.weight[0, 0, 3, 3], gate.conv.weight[0, 1, 3, 3] = 0.7, -0.4  # centre taps only
    x = torch.randn(2, 5, 3, 4)
    scale = torch.sigmoid((0.7 * x.amax(1) - 0.4 * x.mean(1)) / (1 + 1e-5) ** 0.5)  # (B, 3, 4)
    torch.testing.assert_close(gate(x), x * scale[:, None])


def test_triplet_heads_gate_over_height_and_width_then_classify():
    torch.manual_seed(0)
    heads = TripletAttentionHeads(channels=6, num_classes=4, dropout=0.0).eval()
    fmap, pooled = torch.randn(3, 6, 5, 7), torch.randn(3, 6)
    logits = heads(fmap, pooled)
    over_h = heads.attention.gates[0](fmap.transpose(1, 2)).transpose(1, 2)  # (B, H, C, W): pooled over H
    over_w = heads.attention.gates[1](fmap.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
    torch.testing.assert_close(logits[0], heads.local_heads[0](over_h.mean((-2, -1))))
    torch.testing.assert_close(logits[1], heads.local_heads[1](over_w.mean((-2, -1))))
    torch.testing.assert_close(logits[2], heads.global_head(pooled))
    block = ClassBlock(6, 4)
    assert block.classifier.weight.std() < 0.01 and not block.classifier.bias.any()  # N(0, 0.001²), 0


def test_dsa_concatenates_the_tokens_with_softmax_assignments():
    torch.manual_seed(0)
    dsa = DomainSpaceAlignment(channels=6, hidden=12, out_dim=4).eval()
    fmap = torch.randn(2, 6, 3, 3)
    out = dsa(fmap)
    assert out.shape == (2, 6 + 4, 9)
    torch.testing.assert_close(out[:, :6], fmap.flatten(2))
    expected = F.softmax(F.normalize(dsa.projection(fmap.flatten(2)), dim=1), dim=2)
    torch.testing.assert_close(out[:, 6:], expected)
    torch.testing.assert_close(out[:, 6:].sum(-1), torch.ones(2, 4))


@pytest.mark.parametrize("cls", [Sample4Geo, DAC, CAMP])
def test_each_baseline_embeds_the_pooled_layernormed_backbone_vector(cls):
    torch.manual_seed(0)
    model = cls(num_classes=5, backbone="test_convnext").eval()
    x = torch.randn(2, 3, 64, 64)
    net = model.backbone.net
    with torch.no_grad():
        reference = net.forward_head(net.forward_features(x), pre_logits=True)  # timm's own pooled + norm
        torch.testing.assert_close(model(x), F.normalize(reference, dim=-1))


def test_only_what_the_loss_uses_is_built():
    assert DAC(5, backbone="test_convnext", use_cea=False).cea is None
    assert DAC(5, backbone="test_convnext", use_gee=False).gee is None
    camp = CAMP(5, backbone="test_convnext")
    assert camp.gee is None and camp.cea is None and camp.position.embedding.shape[-1] == 12
    assert Sample4Geo(backbone="test_convnext").gee is None
    out_d, out_s = camp.train().forward_pair(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    assert out_s.parts.shape == (2, 3 * camp.embedding_dim) and out_s.logits == [] and out_s.aligned is None
