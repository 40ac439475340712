"""PEE — Progressive Extension Embedding.

In the released code PEE has no module of its own: InfoNCE is applied to the backbone's pooled
embedding, which already aggregates the ConvNeXt hierarchy (spec §1).  That is the default
(``pee="released"`` in :class:`~mean_geo.models.mean.MEAN`, which does not build this module).

``pee="multiscale"`` builds this module, our reading of the paper's text ([INFERRED]): the pooled
vectors of the four stages are projected to the embedding width and accumulated progressively,
coarse stage by coarse stage, onto the final pooled vector.  Projections start at zero so that at
initialisation the embedding is exactly the backbone's (pretrained features are not disturbed).
"""

from __future__ import annotations

import torch
from torch import nn


class ProgressiveExtensionEmbedding(nn.Module):
    """``(stage maps [(B, C_k, H_k, W_k)], pooled (B, D)) -> (B, D)``."""

    def __init__(self, stage_channels: list[int], dim: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(c, dim) for c in stage_channels[:-1])
        for proj in self.projections:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, stages: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        extension = torch.zeros_like(pooled)
        for proj, fmap in zip(self.projections, stages[:-1], strict=True):
            extension = extension + proj(fmap.mean(dim=(-2, -1)))  # progressive: shallow → deep
        return pooled + extension
