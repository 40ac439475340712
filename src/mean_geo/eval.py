"""``python -m mean_geo.eval ckpt_path=…``: evaluate a training checkpoint in both directions.

The checkpoint carries the recipe of its model and dataset, so nothing else is needed; override
the dataset (``dataset=sues200 dataset.root=…`` or just ``dataset.root=…``) to test elsewhere.
Writes metrics.json and plots into this run's directory.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from mean_geo.cli import CONF_DIR, report_user_errors
from mean_geo.composition import build_datamodule, build_lit_module, build_loggers
from mean_geo.errors import CheckpointError, ConfigError
from mean_geo.results import ResultsWriter, read_metrics


def read_training_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint written by mean_geo.train (no arbitrary code is unpickled)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"ckpt_path={path}: not a readable checkpoint ({type(exc).__name__})") from None
    recipe = (ckpt.get("hyper_parameters") or {}).get("build_config") if isinstance(ckpt, dict) else None
    if not recipe or "model" not in recipe or "state_dict" not in ckpt:
        raise CheckpointError(
            f"ckpt_path={path}: not a mean_geo training checkpoint (no model recipe inside); "
            "for the authors' weights use mean_geo.models.official.load_official_checkpoint"
        )
    return ckpt


def run(cfg: DictConfig) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    ckpt = read_training_checkpoint(cfg.ckpt_path)
    recipe = ckpt["hyper_parameters"]["build_config"]
    dataset_cfg = OmegaConf.create(recipe.get("dataset") or {})
    override = {k: v for k, v in (cfg.get("dataset") or {}).items() if v is not None}
    if "_target_" in override:  # another dataset entirely
        dataset_cfg = OmegaConf.create(override)
    elif override:
        if "altitude" in override and "altitude" not in dataset_cfg:
            raise ConfigError("dataset.altitude: the checkpoint's dataset has no altitudes (not SUES-200)")
        dataset_cfg = OmegaConf.merge(dataset_cfg, override)
    dm = build_datamodule(dataset_cfg)
    dm.prepare_data()
    lit = build_lit_module(recipe, None, cfg.eval, cfg.channels_last)
    missing, unexpected = lit.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"ckpt_path={cfg.ckpt_path}: weights do not fit the recorded model "
            f"({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    out_dir = Path(cfg.paths.output_dir)
    writer = ResultsWriter(out_dir, make_plots=cfg.eval.get("plots", True), extra={"checkpoint": str(cfg.ckpt_path)})
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=[writer], logger=build_loggers(cfg.get("logger")) or False
    )
    trainer.test(lit, datamodule=dm, verbose=False)
    return read_metrics(out_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
