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


# --- composing the real Hydra configs -----------------------------------------------------------
from hydra import compose, initialize_config_dir  # noqa: E402

from mean_geo.cli import CONF_DIR  # noqa: E402


def compose_config(name: str, overrides: list[str], return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One data folder for the whole session, so the smoke world is generated once."""
    return tmp_path_factory.mktemp("data")


def quiet_overrides(tmp, data_dir) -> list[str]:
    """Outputs into ``tmp``, data from the session's data folder, no progress bars."""
    out = [
        f"paths.output_dir={tmp}/out",
        f"paths.log_dir={tmp}/logs",
        f"paths.data_dir={data_dir}",
        "trainer.enable_progress_bar=false",
    ]
    return out


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, data_dir):
    """One real `experiment=smoke` training run shared by the tests that inspect its outputs."""
    from mean_geo import train as train_entry

    tmp = tmp_path_factory.mktemp("smoke")
    cfg = compose_config("train", ["experiment=smoke", *quiet_overrides(tmp, data_dir)])
    metrics = train_entry.run(cfg)
    return tmp / "out", metrics, cfg


LEARNING_OVERRIDES = [
    "experiment=smoke",
    # a BatchNorm backbone: from random init, timm's tiny ConvNeXt stays on the InfoNCE plateau
    # for the few steps a test can afford (see README, "The demo"), test_resnet learns in seconds
    "model.backbone=test_resnet",
    "dataset.synthesize.locations=20",
    "dataset.batch_size=12",
    "dataset.augment=true",
    "optim.optimizer.lr=2e-3",
    "trainer.max_epochs=24",
    "eval.plots=false",
    "dataset.val_locations=0",  # train on all 12 training places, test the last checkpoint
]


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory, data_dir):
    """A short real training run that learns: 20 places (12 train, 8 held out), ~40 s on 2 cores
    (measured: D→S R@1 62.5 %, chance 12.5 %)."""
    from mean_geo import train as train_entry

    tmp = tmp_path_factory.mktemp("learned")
    cfg = compose_config("train", [*LEARNING_OVERRIDES, *quiet_overrides(tmp, data_dir)])
    metrics = train_entry.run(cfg)
    return tmp / "out", metrics, cfg
