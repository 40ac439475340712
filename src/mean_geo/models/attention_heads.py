"""DAC's and CAMP's identity heads: triplet attention on the last map, three classifier blocks.

DAC (Sample4Geo + the MCCG heads) turns the stage-4 map along two other axes (channel × width and
height × channel), gates each by a sigmoid map from a 7×7 convolution of its max- and mean-pooled
slices, pools each gated map to a vector, and classifies it; a third classifier reads the pooled
LayerNorm'ed embedding.  The classifiers are cross-entropy heads over the training places
(training only; the retrieval embedding does not use them).
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionGate(nn.Module):
    """``x * sigmoid(BN(conv7x7([max_1(x), mean_1(x)])))``: one gate of triplet attention.

    ``x`` is the map with the axis to pool over in position 1; the 2-channel statistic is
    convolved to one channel.  BatchNorm momentum 0.01, as the authors' ``BasicConv``.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.norm = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.norm(self.conv(pooled)))


class TripletAttention(nn.Module):
    """Two gated views of a ``(B, C, H, W)`` map: gated over H (the C×W plane) and over W (H×C).

    Returns both gated maps in the input's ``(B, C, H, W)`` order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gates = nn.ModuleList([AttentionGate(), AttentionGate()])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        over_height = self.gates[0](x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        over_width = self.gates[1](x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        return [over_height, over_width]


class ClassBlock(nn.Module):
    """Linear bottleneck → BatchNorm1d → Dropout(0.5) → Linear to places.  ``(B, C) -> (B, K)``.

    Initialised as the authors' ``ClassBlock``: Kaiming (fan-out) bottleneck, unit BatchNorm, and a
    classifier drawn from N(0, 0.001²) with zero bias.
    """

    def __init__(self, in_dim: int, num_classes: int, bottleneck: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.bottleneck = nn.Linear(in_dim, bottleneck)
        self.norm = nn.BatchNorm1d(bottleneck)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bottleneck, num_classes)
        nn.init.kaiming_normal_(self.bottleneck.weight, a=0, mode="fan_out")
        nn.init.zeros_(self.bottleneck.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.norm(self.bottleneck(x))))


class TripletAttentionHeads(nn.Module):
    """``(map (B, C, H, W), pooled (B, C)) -> [logits (B, K)] * 3``, ordered as the authors'
    outputs: the two attention branches, then the pooled embedding's head."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.attention = TripletAttention()
        self.local_heads = nn.ModuleList(ClassBlock(channels, num_classes, dropout=dropout) for _ in range(2))
        self.global_head = ClassBlock(channels, num_classes, dropout=dropout)

    def forward(self, fmap: torch.Tensor, pooled: torch.Tensor) -> list[torch.Tensor]:
        gated = self.attention(fmap)
        local = [head(y.mean(dim=(-2, -1))) for head, y in zip(self.local_heads, gated, strict=True)]
        return [*local, self.global_head(pooled)]
