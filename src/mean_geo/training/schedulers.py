"""Learning-rate schedule of the reference: linear warm-up, then cosine decay to zero, per step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def cosine_with_warmup(optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1) -> LambdaLR:
    """The authors' schedule exactly: transformers' ``get_cosine_schedule_with_warmup`` (spec §5).

    They pass a *fractional* warm-up length (``0.1 × all steps``, e.g. 118.4 of 1,184 steps on
    University-1652), so the factor is ``step / warmup`` while ``step < warmup`` (lr 0 at the first
    step) and then ``½(1 + cos(π·progress))`` with ``progress = (step − warmup) / (total − warmup)``.
    Rounding the warm-up to whole steps, or counting from ``step + 1``, shifts every step's lr.
    """
    total_steps = max(1, int(total_steps))
    warmup = warmup_fraction * total_steps

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1.0, warmup)
        progress = (step - warmup) / max(1.0, total_steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return LambdaLR(optimizer, factor)
