"""Learning-rate schedule of the reference: linear warm-up, then cosine decay to zero, per step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def cosine_with_warmup(optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1) -> LambdaLR:
    """HF-style ``cosine with warmup`` (spec §5): warm-up over ``warmup_fraction`` of all steps.

    (University-1652: 10 % of all steps; SUES-200: 0.1 epoch, the same for its 1-epoch recipe.)
    """
    total_steps = max(1, int(total_steps))
    warmup = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))

    return LambdaLR(optimizer, factor)
