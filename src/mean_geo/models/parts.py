"""CAMP's position-aware partition: a learnable position embedding and heat-sorted part pooling.

The stage-4 map gets a learnable ``(1, C, G, G)`` position embedding times a learnable scale
(CAMP's PPB).  Its tokens are then sorted by their "heat" (the mean over channels, hottest first),
split into ``blocks`` runs of equal length (the last takes the remainder) and averaged per run;
the runs' C-vectors are concatenated, ``(B, blocks·C)``.  CAMP's block losses use this vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PositionEmbedding(nn.Module):
    """``map + scale · embedding``; truncated-normal (std 0.02) init, as released.

    The authors' embedding is ``G × G`` = 12 × 12 (a 384 px input); another map size gets it
    resized bicubically (their code only runs at 384 px; docs/methods.md).

    Args:
        channels: C, the map's channels.
        grid: G, the embedding's side.
        scale: the learnable scale's start (CAMP: 0.6 on University-1652, 0.1 on SUES-200).
    """

    def __init__(self, channels: int, grid: int = 12, scale: float = 0.6) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(1, channels, grid, grid))
        nn.init.trunc_normal_(self.embedding, std=0.02, a=-2.0, b=2.0)
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        embedding = self.embedding
        if embedding.shape[-2:] != fmap.shape[-2:]:
            embedding = F.interpolate(embedding, size=fmap.shape[-2:], mode="bicubic", align_corners=False)
        return fmap + embedding.to(fmap.dtype) * self.scale.to(fmap.dtype)


def heat_sorted_blocks(fmap: torch.Tensor, blocks: int = 3) -> torch.Tensor:
    """``(B, C, H, W) -> (B, blocks·C)``: tokens by descending heat, averaged in ``blocks`` runs.

    The runs hold ``N // blocks`` tokens each, the last the rest (N = H·W; 48/48/48 at 12 × 12).
    """
    tokens = fmap.flatten(2).transpose(1, 2)  # (B, N, C)
    n = tokens.shape[1]
    if n < blocks:
        raise ValueError(f"{n} tokens cannot make {blocks} part blocks")
    order = torch.argsort(tokens.mean(dim=-1), dim=1, descending=True)
    ranked = torch.take_along_dim(tokens, order[..., None], dim=1)
    sizes = [n // blocks] * (blocks - 1) + [n - (n // blocks) * (blocks - 1)]
    return torch.cat([run.mean(dim=1) for run in ranked.split(sizes, dim=1)], dim=1)
