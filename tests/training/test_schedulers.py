"""The lr schedule equals transformers' get_cosine_schedule_with_warmup as the authors call it."""

import math

import pytest
import torch

from mean_geo.training.schedulers import cosine_with_warmup


def lrs(total: int, fraction: float, steps: list[int]) -> dict[int, float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, total_steps=total, warmup_fraction=fraction)
    seen = {}
    for step in range(max(steps) + 1):
        if step in steps:
            seen[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return seen


def test_university1652_recipe_matches_the_authors_fractional_warmup():
    # 1,184 steps, warm-up 0.1 x 1,184 = 118.4 steps (a float, as the authors pass it)
    got = lrs(1184, 0.1, [0, 1, 59, 118, 119, 651, 1183])
    assert got[0] == 0.0  # lr 0 at the first step
    assert got[1] == pytest.approx(1 / 118.4)
    assert got[59] == pytest.approx(59 / 118.4)
    assert got[118] == pytest.approx(118 / 118.4)  # still warming up: 118 < 118.4
    assert got[119] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.6 / 1065.6)))
    assert got[651] == pytest.approx(0.5 * (1 + math.cos(math.pi * (651 - 118.4) / 1065.6)))
    assert got[1183] == pytest.approx(0.5 * (1 + math.cos(math.pi * (1183 - 118.4) / 1065.6)))
    assert got[1183] < 1e-5


def test_no_warmup_starts_at_the_full_rate():
    got = lrs(10, 0.0, [0, 5])
    assert got[0] == 1.0 and got[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
