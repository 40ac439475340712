"""GEE — Global Extension Embedding: the diversified embedding generator and its classifier heads.

Trained with cross-entropy over training locations (ID learning); training-only, the retrieval
descriptor does not use it (spec §2.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DiversifiedEmbeddingGenerator(nn.Module):
    """DEG: three dilated 3×3 convs (C → C/4, dilation 1/2/3), averaged → ReLU → 1×1 conv back to C,
    averaged with the input; two outputs through their own dropout.

    As released, the two "diversified" embeddings are the same tensor up to p=0.01 dropout (spec §9.6).
    ``(B, C, H, W) -> [(B, C, H, W), (B, C, H, W)]``.
    """

    def __init__(self, channels: int, num_outputs: int = 2, dropout: float = 0.01) -> None:
        super().__init__()
        hidden = channels // 4
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, hidden, 3, padding=d, dilation=d, bias=False) for d in (1, 2, 3)
        )
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(num_outputs))
        for conv in [*self.branches, self.expand]:
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        mixed = sum(branch(x) for branch in self.branches) / len(self.branches)
        y = (self.expand(F.relu(mixed)) + x) / 2
        return [drop(y) for drop in self.dropouts]


class MultiScaleDilatedFusion(nn.Module):
    """The heads' bottleneck: the C-vector read as a 1-channel signal, four parallel Conv1d
    (k3 d1/d2/d3, k1+ReLU) to ``bottleneck/4`` channels each, averaged over the signal axis.

    ``channel_axis_conv=True`` is the released behaviour: it sees only statistics of the values,
    not which channel holds them (permutation-invariant, spec §9.5).  ``False`` is the "fixed"
    ablation: a Linear C → bottleneck.  ``(B, C) -> (B, bottleneck)``.

    The mean over the signal of a linear convolution is linear in three window sums of the input,
    so the dilated branches are computed exactly without their (B, 128, C) outputs (the released
    Conv1d parameters are kept, so checkpoints load unchanged); only the ReLU branch needs the
    full signal.  Equal to running the convolutions (tested), and ~25 % of a CPU training step less.
    """

    def __init__(self, in_dim: int, bottleneck: int = 512, channel_axis_conv: bool = True) -> None:
        super().__init__()
        self.channel_axis_conv = channel_axis_conv
        if channel_axis_conv:
            g = bottleneck // 4
            self.dilated = nn.ModuleList(nn.Conv1d(1, g, 3, padding=d, dilation=d) for d in (1, 2, 3))
            self.pointwise = nn.Conv1d(1, g, 1)
        else:
            self.linear = nn.Linear(in_dim, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channel_axis_conv:
            return self.linear(x)
        length = x.shape[-1]
        total = x.sum(dim=-1, keepdim=True)
        parts = []
        for conv in self.dilated:
            d = conv.dilation[0]
            # tap k reads x shifted by (k - 1)·d with zero padding: the sum loses d values at one end
            windows = torch.cat(
                [total - x[:, length - d :].sum(-1, keepdim=True), total, total - x[:, :d].sum(-1, keepdim=True)],
                dim=-1,
            )  # (B, 3)
            # the mean before the product: a sum over ~1000 channels can pass fp16's 65504 once
            # autocast runs the product in half precision (a CUDA fp16 run), the mean cannot
            parts.append((windows / length) @ conv.weight[:, 0, :].T + conv.bias)
        w, b = self.pointwise.weight[:, 0, 0], self.pointwise.bias
        parts.append(F.relu(x[:, None, :] * w[None, :, None] + b[None, :, None]).mean(dim=-1))
        return torch.cat(parts, dim=1)


class ClassifierHead(nn.Module):
    """Bottleneck → BatchNorm1d → Dropout(0.5) → Linear to locations.  ``(B, C) -> (B, K)``."""

    def __init__(
        self, in_dim: int, num_classes: int, bottleneck: int = 512, dropout: float = 0.5, channel_axis_conv: bool = True
    ) -> None:
        super().__init__()
        self.bottleneck = MultiScaleDilatedFusion(in_dim, bottleneck, channel_axis_conv)
        self.norm = nn.BatchNorm1d(bottleneck)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bottleneck, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.norm(self.bottleneck(x))))


class GlobalExtensionEmbedding(nn.Module):
    """GEE: one head on the global vector and one per DEG output (after GAP).

    ``(map (B, C, H, W), pooled (B, C)) -> [logits (B, K)] * (num_local + 1)``, ordered
    [local_1, …, local_n, global] as in the released code.
    """

    def __init__(self, channels: int, num_classes: int, num_local: int = 2, channel_axis_conv: bool = True) -> None:
        super().__init__()
        self.deg = DiversifiedEmbeddingGenerator(channels, num_local)
        self.local_heads = nn.ModuleList(
            ClassifierHead(channels, num_classes, channel_axis_conv=channel_axis_conv) for _ in range(num_local)
        )
        self.global_head = ClassifierHead(channels, num_classes, channel_axis_conv=channel_axis_conv)

    def forward(self, fmap: torch.Tensor, pooled: torch.Tensor) -> list[torch.Tensor]:
        local = [head(y.mean(dim=(-2, -1))) for head, y in zip(self.local_heads, self.deg(fmap), strict=True)]
        return [*local, self.global_head(pooled)]
