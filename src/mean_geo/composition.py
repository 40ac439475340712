"""Turn composed Hydra configs into objects — the only library code that sees a DictConfig.

Shared by the entry points (train, eval) and the tests, so all of them build things the same way.
Model, loss and dataset go through the checked recipes of :mod:`mean_geo.recipe` (what is built
is exactly what a checkpoint will say); optimiser, scheduler, loggers, callbacks and the trainer
come from the user's own config through ``instantiate``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from mean_geo.data.datamodule import CrossViewDataModule
from mean_geo.errors import ConfigError
from mean_geo.lit_module import MEANLitModule
from mean_geo.recipe import build_datamodule_from_recipe, build_loss, build_model, checkpoint_recipe


def to_plain(cfg: DictConfig | dict | None) -> dict:
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_datamodule(dataset_cfg: DictConfig | dict) -> CrossViewDataModule:
    """The datamodule a dataset config (or a checkpoint's dataset recipe) names, arguments checked."""
    dataset = to_plain(dataset_cfg)
    if not dataset or not ({"name", "_target_"} & set(dataset)):
        raise ConfigError("dataset: no dataset selected; use dataset=synthetic|sues200|university1652")
    return build_datamodule_from_recipe(dataset)


def build_config_of(cfg: DictConfig, num_classes: int) -> dict:
    """The checked plain recipe of model + loss (+ dataset) that checkpoints store (no code paths)."""
    loss = to_plain(cfg.loss)
    model = to_plain(cfg.model)
    model.update(
        num_classes=num_classes,
        use_gee=float(loss.get("weight_ce", 0)) > 0,  # build only what a loss uses (DDP-safe)
        use_cea=float(loss.get("weight_cda", 0)) > 0,
    )
    return checkpoint_recipe({"model": model, "loss": loss, "dataset": to_plain(cfg.get("dataset"))}, "config")


def build_lit_module(
    build_config: dict,
    optim_cfg: DictConfig | None = None,
    eval_cfg: DictConfig | dict | None = None,
    channels_last: bool = False,
) -> MEANLitModule:
    """A module for training: the model is built as the recipe says (pretrained weights included)."""
    eval_cfg = to_plain(eval_cfg)
    return MEANLitModule(
        build_model(build_config["model"]),
        build_loss(build_config["loss"]),
        optimizer=instantiate(optim_cfg.optimizer) if optim_cfg is not None else None,
        scheduler=instantiate(optim_cfg.scheduler) if optim_cfg is not None and optim_cfg.get("scheduler") else None,
        eval_ks=eval_cfg.get("ks", (1, 5, 10)),
        drop_unmatched_gallery=eval_cfg.get("drop_unmatched_gallery", True),
        channels_last=channels_last,
        build_config=build_config,
    )


def _wandb_needs_offline() -> bool:
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def build_loggers(logger_cfg: DictConfig | None) -> list:
    loggers = []
    for name, conf in (logger_cfg or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        if "WandbLogger" in conf._target_ and _wandb_needs_offline():
            # wandb refuses to start without a key; keep the run local and say so
            os.environ["WANDB_MODE"] = "offline"
            print("note: no W&B API key found; logging offline (sync later with `wandb sync`)")
        try:
            loggers.append(instantiate(conf))
        except (ImportError, ModuleNotFoundError) as exc:
            raise ConfigError(f"logger={name}: {exc}; install the extra (pip install -e '.[{name}]')") from None
    return loggers


def build_callbacks(callbacks_cfg: DictConfig | None, progress_bar: bool = True) -> list[L.Callback]:
    """Callbacks from config; progress bars are left out when the trainer has them disabled
    (``trainer.enable_progress_bar=false`` would otherwise refuse the configured bar)."""
    callbacks = [instantiate(c) for c in (callbacks_cfg or {}).values() if c is not None and "_target_" in c]
    return [c for c in callbacks if progress_bar or not isinstance(c, ProgressBar)]
