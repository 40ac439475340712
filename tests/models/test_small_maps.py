"""Convolutions on tiny maps trained as unfold + matmul: the same outputs and gradients as
``nn.Conv2d``, the same state dict, and ``nn.Conv2d``'s own path wherever they do not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mean_geo.models.mean import MEAN
from mean_geo.models.small_maps import SmallMapConv2d, use_small_map_conv


def _outputs_and_grads(conv: nn.Module, x: torch.Tensor, upstream_seed: int = 1):
    conv.zero_grad()
    x = x.clone().requires_grad_(True)
    y = conv(x)
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(upstream_seed), dtype=y.dtype)
    (y * upstream).sum().backward()
    return y, x.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "kernel", "stride", "padding", "size", "bias"),
    [
        (16, 24, 3, 1, 1, 2, False),  # a ResNet's last stage at 64 px: 2x2 -> 2x2
        (8, 16, 3, 2, 1, 4, True),  # a stride-2 entry into it: 4x4 -> 2x2
        (8, 8, 1, 1, 0, 2, True),  # a 1x1 projection
        (6, 4, 2, 2, 0, 2, True),  # ConvNeXt's 2x2 stride-2 downsampling: 2x2 -> 1x1
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_nn_conv2d_in_value_and_gradient(in_ch, out_ch, kernel, stride, padding, size, bias, channels_last):
    torch.manual_seed(0)
    plain = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias).double()
    fast = copy.deepcopy(plain)
    assert use_small_map_conv(fast) == 1 and type(fast) is SmallMapConv2d
    x = torch.randn(5, in_ch, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for got, expected in zip(_outputs_and_grads(fast, x), _outputs_and_grads(plain, x), strict=True):
        if expected is None:
            assert got is None
        else:
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert fast.state_dict().keys() == plain.state_dict().keys()


def test_large_maps_inference_and_grouped_convs_keep_nn_conv2d(monkeypatch):
    calls = []
    real = nn.Conv2d._conv_forward
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, *a: calls.append(1) or real(self, *a))
    conv = nn.Conv2d(4, 4, 3, padding=1)
    use_small_map_conv(conv)
    conv(torch.randn(2, 4, 3, 3))  # 3x3 outputs: more than 4 pixels
    with torch.no_grad():
        conv(torch.randn(2, 4, 2, 2))  # inference
    conv.eval()
    conv(torch.randn(2, 4, 2, 2))  # evaluation with gradients (embeddings never change path)
    conv.train()
    assert len(calls) == 3
    conv(torch.randn(2, 4, 2, 2))  # training on a 2x2 map: the matmul path
    assert len(calls) == 3
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
    assert use_small_map_conv(grouped) == 0 and type(grouped) is nn.Conv2d


def test_mean_uses_it_unless_asked_not_to():
    count = lambda m: sum(isinstance(x, SmallMapConv2d) for x in m.modules())  # noqa: E731
    assert count(MEAN(4, backbone="resnet18")) > 20
    assert count(MEAN(4, backbone="resnet18", fast_small_maps=False)) == 0
