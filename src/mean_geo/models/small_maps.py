"""Convolutions on tiny feature maps, trained on CPU as one matrix product of unfolded patches.

Why: at the small images a CPU trains on (the demo's 64 px), a ResNet's last stage works on 2×2
maps, and oneDNN's backward of a 512→512 3×3 convolution there is slow: 61 ms for a batch of 32
(88 ms channels-last) — about half of a whole ResNet-18 MEAN step — for 0.6 GFLOP.  The same
convolution written as ``weight @ unfold(x)`` (im2col; autograd's backward is two matrix products
and a fold) takes 26 ms.  On larger maps oneDNN is faster, so only convolutions whose output has at
most :data:`MAX_OUTPUT_PIXELS` pixels take this path, and only for CPU training (train mode with
gradients): evaluation and inference — so every embedding —, tracing/export and other devices run
``nn.Conv2d`` itself.  Parameters and state-dict keys are
``nn.Conv2d``'s; the results equal it to float rounding (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mean_geo.models.conv_swap import swap_class

#: output maps up to 2×2 (measured: 2.3× faster there; 4×4 maps are faster in oneDNN)
MAX_OUTPUT_PIXELS = 4


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` (groups 1, zero padding) that trains on tiny CPU maps as unfold + matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        training = self.training and torch.is_grad_enabled()
        if x.device.type != "cpu" or not training or torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(x)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        out_h = (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if out_h * out_w > MAX_OUTPUT_PIXELS:
            return super().forward(x)
        patches = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (N, C·kh·kw, L)
        out = self.weight.reshape(self.out_channels, -1) @ patches
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.reshape(x.shape[0], self.out_channels, out_h, out_w)


def _eligible(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups == 1
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)  # not padding="same"
    )


def use_small_map_conv(model: nn.Module) -> int:
    """Give every plain ``nn.Conv2d`` in ``model`` the tiny-map CPU training path, in place (same
    parameters, same state-dict keys).  Returns how many were converted."""
    return swap_class(model, _eligible, SmallMapConv2d)
