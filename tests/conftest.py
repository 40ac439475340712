"""Shared fixtures: tiny synthetic worlds in both real layouts (generated once per test session)."""

from __future__ import annotations

import os

import pytest
import torch

from mean_geo.synth.writer import WorldSpec, write_world

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(min(2, os.cpu_count() or 1))

SUES_SPEC = WorldSpec("sues200", locations=10, seed=0, image_size=64, drone_per_location=3)
U1652_SPEC = WorldSpec("university1652", locations=6, seed=0, image_size=64, drone_per_location=4)


@pytest.fixture(scope="session")
def sues_world(tmp_path_factory):
    return write_world(SUES_SPEC, tmp_path_factory.mktemp("worlds") / "sues200", progress=False)


@pytest.fixture(scope="session")
def u1652_world(tmp_path_factory):
    return write_world(U1652_SPEC, tmp_path_factory.mktemp("worlds") / "u1652", progress=False)
