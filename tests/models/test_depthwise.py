"""The fast-backward depthwise convolution computes the same gradients as ``nn.Conv2d``."""

import copy

import pytest
import torch
from torch import nn

from mean_geo.models.depthwise import DepthwiseConv2d, use_fast_depthwise


def _pair(channels: int = 6, kernel: int = 7, bias: bool = True) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=bias)
    fast = copy.deepcopy(plain)
    assert use_fast_depthwise(fast) == 1 and type(fast) is DepthwiseConv2d
    return plain, fast


def _grads(conv: nn.Module, x: torch.Tensor, upstream: torch.Tensor, autocast: bool):
    conv.zero_grad()
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = conv(x)
    (y.float() * upstream).sum().backward()
    return y.float(), x.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize("kernel,bias", [(7, True), (3, False)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fp32_gradients_equal_conv2d(kernel, bias, channels_last):
    plain, fast = _pair(kernel=kernel, bias=bias)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 11, 9, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(3, 6, 11, 9, generator=gen)
    for got, want in zip(_grads(fast, x, upstream, False), _grads(plain, x, upstream, False), strict=True):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_gradients_match_conv2d_within_bf16_precision():
    plain, fast = _pair()
    gen = torch.Generator().manual_seed(2)
    x, upstream = torch.randn(4, 6, 16, 16, generator=gen), torch.randn(4, 6, 16, 16, generator=gen)
    got, want = _grads(fast, x, upstream, True), _grads(plain, x, upstream, True)
    assert got[0].dtype == want[0].dtype
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)  # the same forward
    exact = _grads(plain, x, upstream, False)  # fp32 reference
    for g, w, e in zip(got[1:], want[1:], exact[1:], strict=True):
        assert g.dtype == w.dtype
        # as close to the fp32 gradient as PyTorch's own bf16 backward is (fp32 accumulation: closer)
        assert (g - e).abs().max() <= 1.5 * (w - e).abs().max() + 1e-3


def test_only_stride_one_same_padding_depthwise_convs_are_converted_and_keys_stay():
    net = nn.Sequential(
        nn.Conv2d(4, 4, 7, padding=3, groups=4),  # converted
        nn.Conv2d(4, 4, 3, padding=1),  # dense
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),  # strided
        nn.Conv2d(4, 4, 3, padding=0, groups=4),  # not 'same'
    )
    keys = list(net.state_dict())
    assert use_fast_depthwise(net) == 1
    assert [type(m) for m in net] == [DepthwiseConv2d, nn.Conv2d, nn.Conv2d, nn.Conv2d]
    assert list(net.state_dict()) == keys


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated; ONNX export still uses it
def test_inference_and_tracing_take_the_plain_path():
    plain, fast = _pair()
    x = torch.randn(1, 6, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=0)
    traced = torch.jit.trace(fast.eval(), x)
    assert "PythonOp" not in str(traced.graph)
