"""DAC's domain space alignment (DSA): the part tokens of the last map with soft assignments.

Each of the H·W tokens is projected (1×1 Conv1d C → 2C, BatchNorm, ReLU, 1×1 Conv1d → D, no
biases), L2-normalised over its D channels, and turned into weights by a softmax over the tokens;
the output concatenates the raw tokens and these weights, ``(B, C + D, H·W)``.  The DSA loss then
aligns the two views' outputs by their cosine (training only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DomainSpaceAlignment(nn.Module):
    """``(B, C, H, W) -> (B, C + out_dim, H·W)``; Kaiming (fan-out) convolutions as released.

    Args:
        channels: C, the backbone's channels (1024 for ConvNeXt-Base).
        hidden: the projection's hidden width (the authors' 2048 = 2C).
        out_dim: D, the width of the assignments (the authors' 256).
        temperature: divides the normalised projection before the softmax (the authors' 1).
    """

    def __init__(self, channels: int, hidden: int, out_dim: int = 256, temperature: float = 1.0) -> None:
        super().__init__()
        self.projection = nn.Sequential(
            nn.Conv1d(channels, hidden, 1, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, out_dim, 1, bias=False),
        )
        self.temperature = temperature
        for m in self.projection:
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        tokens = fmap.flatten(2)
        weights = F.softmax(F.normalize(self.projection(tokens), dim=1) / self.temperature, dim=2)
        return torch.cat([tokens, weights], dim=1)
