"""Turn composed Hydra configs into objects: datamodule, evaluation options, module, trainer, callbacks.

Shared by the entry points (train, eval, index) and the tests, so all of them build things the same
way.  The precision policy lives in :mod:`mean_geo.training.hardware`, the loggers in
:mod:`mean_geo.training.loggers`.  Model, loss and dataset go through the checked specs of
:mod:`mean_geo.files.specs` (what is built is exactly what a checkpoint will say); optimiser,
scheduler, callbacks and the trainer come from the user's own config through ``instantiate``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from mean_geo.datamodules import DATAMODULES, CrossViewDataModule
from mean_geo.errors import ConfigError, MeanGeoError, whole_number
from mean_geo.files.specs import checkpoint_spec, dataset_spec, loss_spec
from mean_geo.localization.refine import RefineSettings
from mean_geo.losses import LOSSES, build_loss
from mean_geo.models.backbone import normalization
from mean_geo.models.input_size import check_spec_image_size
from mean_geo.models.registry import build_architecture
from mean_geo.retrieval.options import EvalOptions
from mean_geo.training import hardware
from mean_geo.training.checkpoint_io import AtomicCheckpointIO
from mean_geo.training.lit_module import MEANLitModule
from mean_geo.training.progress import progress_bar
from mean_geo.training.refined_eval import RefineRequest

log = logging.getLogger(__name__)


def to_plain(cfg: DictConfig | dict | None) -> dict:
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_datamodule(dataset_cfg: DictConfig | dict, options: EvalOptions | None = None) -> CrossViewDataModule:
    """The datamodule a dataset config (or a checkpoint's dataset spec) names, arguments checked.

    With ``options``, also the corrupted queries its test loaders serve (``eval.corruptions``).
    """
    dataset = to_plain(dataset_cfg)
    if not dataset or not ({"name", "_target_"} & set(dataset)):
        raise ConfigError("dataset: no dataset selected; use dataset=synthetic|sues200|university1652")
    checked = dataset_spec(dataset)
    return DATAMODULES.get(checked.pop("name"))(**checked, eval_options=options)


def eval_options(eval_cfg: DictConfig | dict | None) -> EvalOptions:
    """``cfg.eval`` checked once, so a wrong value stops before any work (not yet resolved against a dataset)."""
    return EvalOptions.from_settings(to_plain(eval_cfg))


def build_evaluation(
    dataset_cfg: DictConfig | dict, options: EvalOptions, refine: RefineRequest | None = None
) -> tuple[CrossViewDataModule, EvalOptions]:
    """The datamodule, and the evaluation options resolved against its protocol.

    The dataset's arguments are checked, then the options against the dataset (GTA-UAV refuses
    re-ranking, say): every refusal comes before a world is written or a step trained.  With
    ``refine``, each query keeps as many ranked tiles as refinement verifies.
    """
    if refine is not None:
        options = replace(options, ranking_k=max(options.ranking_k, refine.settings.top_n))
    dm = build_datamodule(dataset_cfg, options)
    return dm, options.for_dataset(dm.protocol, dm.describe().name, dm.directions)


def dataset_settings(cfg: DictConfig) -> dict:
    """The dataset config, with the backbone's input statistics (timm's data config) where it
    leaves them unset; what the datamodule gets and what the checkpoint records."""
    dataset = to_plain(cfg.dataset)
    if dataset.get("mean") is None or dataset.get("std") is None:
        dataset["mean"], dataset["std"] = normalization(str(cfg.model.backbone))
    return dataset


def run_spec(cfg: DictConfig, num_classes: int) -> dict:
    """The checked build spec of model + loss (+ dataset) that checkpoints store (no code paths)."""
    loss = to_plain(cfg.loss)
    model = to_plain(cfg.model)
    plugins = list(cfg.get("plugins") or [])  # recorded as names: loading a checkpoint never imports them
    checked_loss = loss_spec(loss, plugins=plugins)
    # build only the branches the loss uses (DDP-safe): the loss class says which
    model.update(num_classes=num_classes, **LOSSES.get(checked_loss["name"]).model_branches(checked_loss))
    return checkpoint_spec(
        {"model": model, "loss": loss, "dataset": dataset_settings(cfg), "plugins": plugins}, "config"
    )


def check_input_size(cfg: DictConfig) -> None:
    """The model of ``cfg`` runs at ``dataset.image_size``, checked before any work (a world
    written, a step trained): :mod:`mean_geo.models.input_size`."""
    spec = run_spec(cfg, num_classes=2)
    check_spec_image_size(spec["model"], int(spec["dataset"]["image_size"]))


def build_lit_module(
    spec: dict,
    optim_cfg: DictConfig | None = None,
    eval_options: EvalOptions | None = None,
    channels_last: bool = False,
    grad_cache_chunk: int | None = None,
    gradient_clip: tuple[float | None, str] = (None, "norm"),
) -> MEANLitModule:
    """A module for training: the model is built as the spec says (pretrained weights included)."""
    return MEANLitModule(
        build_architecture(spec["model"]),
        build_loss(spec["loss"]),
        optimizer=instantiate(optim_cfg.optimizer) if optim_cfg is not None else None,
        scheduler=instantiate(optim_cfg.scheduler) if optim_cfg is not None and optim_cfg.get("scheduler") else None,
        eval_options=eval_options,
        channels_last=channels_last,
        spec=spec,
        grad_cache_chunk=grad_cache_chunk,
        gradient_clip=gradient_clip,
        backbone_lr_factor=float((optim_cfg or {}).get("backbone_lr_factor", 1.0)),
    )


def refine_request(eval_cfg: DictConfig | dict | None, directions: Sequence[str]) -> RefineRequest | None:
    """``eval.refine*`` checked, and the matcher built once (its weights read), before any work.

    Raises:
        ConfigError: a wrong value, or refinement of an evaluation without D->S.
    """
    eval_cfg = to_plain(eval_cfg)
    enabled = eval_cfg.get("refine", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"eval.refine={enabled!r}: expected true or false")
    if not enabled:
        return None
    if "d2s" not in directions:
        raise ConfigError(f"eval.refine: refines drone -> satellite queries; dataset.directions={list(directions)}")
    for key in ("refine_top_n", "refine_min_inliers"):
        whole_number(f"eval.{key}", eval_cfg.get(key, 5 if key == "refine_top_n" else 15), 1)
    try:
        settings = RefineSettings(
            top_n=eval_cfg.get("refine_top_n", 5),
            min_inliers=eval_cfg.get("refine_min_inliers", 15),
            rerank=eval_cfg.get("refine_rerank", "inliers"),
        )
    except MeanGeoError as exc:
        raise ConfigError(f"eval.{exc}") from None
    request = RefineRequest(
        settings, str(eval_cfg.get("refine_matcher", "sift")), eval_cfg.get("refine_matcher_weights")
    )
    request.build()  # an unknown matcher, missing or foreign weights: now, not after the evaluation
    return request


def manual_clipping(trainer_cfg: DictConfig | dict, grad_cache_chunk: int | None) -> tuple[dict, tuple]:
    """With gradient caching the module optimises manually, and Lightning then refuses its own
    clipping and accumulation: the clipping settings move to the module (same values, same place
    in the step); accumulation has no manual equivalent here, so it is refused."""
    cfg = to_plain(trainer_cfg)
    if grad_cache_chunk is None:
        return cfg, (None, "norm")
    if int(cfg.get("accumulate_grad_batches") or 1) != 1:
        raise ConfigError(
            "trainer.accumulate_grad_batches and grad_cache.chunk_size: choose one "
            "(gradient caching already trains the whole batch with a chunk's memory)"
        )
    clip = (cfg.pop("gradient_clip_val", None), cfg.pop("gradient_clip_algorithm", None) or "norm")
    return cfg, clip


def build_trainer(trainer_cfg: DictConfig | dict, callbacks: list, logger) -> L.Trainer:
    """The Trainer of train/eval/index: ``precision: auto`` resolved, fp16 AMP on a GPU with the
    authors' GradScaler start (``init_scale=2**10``), checkpoints written atomically."""
    cfg = to_plain(trainer_cfg)
    accelerator = str(cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible here; use hardware=auto or hardware=cpu"
        )
    plugins = hardware.precision_plugins(cfg, accelerator)
    plugins.append(AtomicCheckpointIO())  # a full disk never leaves a truncated checkpoint
    if cfg.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks = [*callbacks, progress_bar()]  # eval, index: lines, not a bar, in a file
    return instantiate(cfg, callbacks=callbacks, logger=logger, plugins=plugins)


def build_callbacks(callbacks_cfg: DictConfig | None, progress_bar: bool = True) -> list[L.Callback]:
    """Callbacks from config; progress bars are left out when the trainer has them disabled
    (``trainer.enable_progress_bar=false`` would otherwise refuse the configured bar)."""
    callbacks = [instantiate(c) for c in (callbacks_cfg or {}).values() if c is not None and "_target_" in c]
    return [c for c in callbacks if progress_bar or not isinstance(c, ProgressBar)]
