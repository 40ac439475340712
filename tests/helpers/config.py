"""Composing the real Hydra configs in-process, with outputs kept inside a test's folder."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from mean_geo.cli import CONF_DIR

LEARNING_OVERRIDES = [
    "experiment=smoke",
    # a BatchNorm backbone: from random init, timm's tiny ConvNeXt stays on the InfoNCE plateau
    # for the few steps a test can afford (see docs/experiments.md), test_resnet learns in seconds
    "model.backbone=test_resnet",
    "dataset.synthesize.locations=20",
    "dataset.batch_size=12",
    "dataset.augment=true",
    "optim.optimizer.lr=2e-3",
    "trainer.max_epochs=24",
    "eval.plots=false",
    "dataset.val_locations=0",  # train on all 12 training places, test the last checkpoint
]


def compose_config(name: str, overrides: list[str], return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=return_hydra_config)


def quiet_overrides(tmp, data_dir) -> list[str]:
    """Outputs into ``tmp``, data from the session's data folder, no progress bars."""
    return [
        f"paths.output_dir={tmp}/out",
        f"paths.log_dir={tmp}/logs",
        f"paths.data_dir={data_dir}",
        "trainer.enable_progress_bar=false",
    ]
