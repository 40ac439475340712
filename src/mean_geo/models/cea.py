"""CEA — Cross-Domain Enhanced Alignment: projection, adaptive calibration, multi-level fusion.

Its output map is aligned across views by the CDA loss; training-only (spec §2.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SparseProjection(nn.Module):
    """1×1 Conv1d C → 2C (no bias) → BN → ReLU → 1×1 Conv1d → D (no bias) → dropout 0.05.
    ``(B, C, N) -> (B, D, N)``; Kaiming-normal (fan_out) init as released."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, sparsity: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_dim, hidden, 1, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, out_dim, 1, bias=False),
            nn.Dropout(sparsity),
        )
        for m in self.net:
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AdaptiveCalibration(nn.Module):
    """1×1 Conv1d D → D, then a temperature-0.1 softmax over the N positions.

    ``double_softmax=True`` (released) applies a second plain softmax, which makes the weights
    nearly uniform (≈ 1/N, spec §9.4); ``False`` keeps the single softmax of the paper's text.
    """

    def __init__(self, dim: int, temperature: float = 0.1, double_softmax: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv1d(dim, dim, 1)
        self.temperature = temperature
        self.double_softmax = double_softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.softmax(self.proj(x) / self.temperature, dim=2)
        return F.softmax(w, dim=2) if self.double_softmax else w


class MultiLevelFusion(nn.Module):
    """MSF: 1×1 convs bring the raw map and the calibration map to ``out_dim``; concatenated,
    fused by a 1×1 conv → BN → ReLU.  ``((B, C, N), (B, D, N)) -> (B, out_dim, N)``."""

    def __init__(self, map_dim: int, calib_dim: int, out_dim: int = 512) -> None:
        super().__init__()
        self.from_map = nn.Conv1d(map_dim, out_dim, 1)
        self.from_calibration = nn.Conv1d(calib_dim, out_dim, 1)
        self.fuse = nn.Sequential(nn.Conv1d(2 * out_dim, out_dim, 1), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))

    def forward(self, fmap: torch.Tensor, calibration: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.from_map(fmap), self.from_calibration(calibration)], dim=1))


class CrossDomainEnhancedAlignment(nn.Module):
    """``(B, C, H, W) -> (B, out_dim, H·W)``: project, L2-normalise over channels, calibrate, fuse."""

    def __init__(self, channels: int, proj_dim: int = 256, out_dim: int = 512, double_softmax: bool = True) -> None:
        super().__init__()
        self.projection = SparseProjection(channels, 2 * channels, proj_dim)
        self.calibration = AdaptiveCalibration(proj_dim, double_softmax=double_softmax)
        self.fusion = MultiLevelFusion(channels, proj_dim, out_dim)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        flat = fmap.flatten(2)
        w = F.normalize(self.projection(flat), dim=1)
        return self.fusion(flat, self.calibration(w))
