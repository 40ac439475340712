"""Turn composed Hydra configs into objects — the only library code that sees a DictConfig.

Shared by the entry points (train, eval) and the tests, so all of them build things the same way.
Model, loss and dataset go through the checked specs of :mod:`mean_geo.files.specs` (what is built
is exactly what a checkpoint will say); optimiser, scheduler, loggers, callbacks and the trainer
come from the user's own config through ``instantiate``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from mean_geo.data.corruptions import SEVERITIES, query_conditions
from mean_geo.data.datamodule import DATAMODULES, CrossViewDataModule
from mean_geo.errors import ConfigError, MeanGeoError, whole_number
from mean_geo.files.specs import checkpoint_spec, dataset_spec, loss_spec
from mean_geo.localization.refine import RefineSettings
from mean_geo.losses import LOSSES, build_loss
from mean_geo.models.backbone import normalization
from mean_geo.models.input_size import check_spec_image_size
from mean_geo.models.registry import build_architecture
from mean_geo.retrieval.multi_query import check_mode
from mean_geo.retrieval.rerank import RerankSettings
from mean_geo.synthetic.writer import WorldSpec, write_world
from mean_geo.training.checkpoint_io import AtomicCheckpointIO
from mean_geo.training.identity import RunIdentity
from mean_geo.training.lit_module import MEANLitModule
from mean_geo.training.progress import progress_bar
from mean_geo.training.refined_eval import RefineRequest

log = logging.getLogger(__name__)


def to_plain(cfg: DictConfig | dict | None) -> dict:
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_datamodule(dataset_cfg: DictConfig | dict, eval_cfg: DictConfig | dict | None = None) -> CrossViewDataModule:
    """The datamodule a dataset config (or a checkpoint's dataset spec) names, arguments checked; a
    synthetic one gets its world writer.  With ``eval_cfg``, also the corrupted queries its test
    loaders serve (``eval.corruptions``)."""
    dataset = to_plain(dataset_cfg)
    if not dataset or not ({"name", "_target_"} & set(dataset)):
        raise ConfigError("dataset: no dataset selected; use dataset=synthetic|sues200|university1652")
    settings = to_plain(eval_cfg)
    conditions = query_conditions(settings.get("corruptions"), settings.get("severities", SEVERITIES))
    checked = dataset_spec(dataset)
    dm = DATAMODULES.get(checked.pop("name"))(**checked)
    if dm.synthesize is not None:
        try:
            spec = WorldSpec(layout=dm.layout, **{**dm.world_spec_kwargs(), **dm.synthesize})
        except MeanGeoError as exc:  # the spec names its own field; the user wrote dataset.synthesize.<field>
            raise type(exc)(f"dataset.synthesize.{exc}") from None
        dm.write_world = functools.partial(write_world, spec)
    dm.query_conditions = conditions
    return dm


def dataset_settings(cfg: DictConfig) -> dict:
    """The dataset config, with the backbone's input statistics (timm's data config) where it
    leaves them unset; what the datamodule gets and what the checkpoint records."""
    dataset = to_plain(cfg.dataset)
    if dataset.get("mean") is None or dataset.get("std") is None:
        dataset["mean"], dataset["std"] = normalization(str(cfg.model.backbone))
    return dataset


def build_config_of(cfg: DictConfig, num_classes: int) -> dict:
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
    spec = build_config_of(cfg, num_classes=2)
    check_spec_image_size(spec["model"], int(spec["dataset"]["image_size"]))


def build_lit_module(
    build_config: dict,
    optim_cfg: DictConfig | None = None,
    eval_cfg: DictConfig | dict | None = None,
    channels_last: bool = False,
    grad_cache_chunk: int | None = None,
    gradient_clip: tuple[float | None, str] = (None, "norm"),
) -> MEANLitModule:
    """A module for training: the model is built as the spec says (pretrained weights included)."""
    return MEANLitModule(
        build_architecture(build_config["model"]),
        build_loss(build_config["loss"]),
        optimizer=instantiate(optim_cfg.optimizer) if optim_cfg is not None else None,
        scheduler=instantiate(optim_cfg.scheduler) if optim_cfg is not None and optim_cfg.get("scheduler") else None,
        **eval_options(eval_cfg),
        channels_last=channels_last,
        build_config=build_config,
        grad_cache_chunk=grad_cache_chunk,
        gradient_clip=gradient_clip,
        backbone_lr_factor=float((optim_cfg or {}).get("backbone_lr_factor", 1.0)),
    )


def eval_options(eval_cfg: DictConfig | dict | None) -> dict:
    """``cfg.eval``'s conventions as :class:`MEANLitModule` arguments (training and ``mean_geo.eval``
    alike), checked here so a wrong value stops before any work."""
    eval_cfg = to_plain(eval_cfg)
    rerank = eval_cfg.get("rerank", False)
    if not isinstance(rerank, bool):
        raise ConfigError(f"eval.rerank={rerank!r}: expected true or false")
    flip = eval_cfg.get("flip_tta", False)
    if not isinstance(flip, bool):
        raise ConfigError(f"eval.flip_tta={flip!r}: expected true or false")
    settings = RerankSettings(
        k1=eval_cfg.get("rerank_k1", 20),
        k2=eval_cfg.get("rerank_k2", 6),
        lambda_value=eval_cfg.get("rerank_lambda", 0.3),
    )
    return {
        "eval_ks": eval_cfg.get("ks", (1, 5, 10)),
        "drop_unmatched_gallery": eval_cfg.get("drop_unmatched_gallery"),
        "multi_query": check_mode(eval_cfg.get("multi_query", "none")),
        "flip_tta": flip,
        "rerank": settings if rerank else None,
    }


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


#: the authors' GradScaler starts at 2**10 (Lightning's default 2**16 skips more steps at the start)
AMP_INIT_SCALE = 2.0**10


def cpu_supports_bf16() -> bool:
    """Native bf16 on this CPU (AVX512-BF16/AMX): 2-3x faster training; emulated it is slower."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(accelerator: str, precision: str) -> str:
    """``precision: auto``: fp16 AMP on a GPU (the authors' recipe), bf16 autocast on a CPU that
    has it, else fp32.  Anything else is passed through as the user wrote it."""
    if str(precision) != "auto":
        return precision
    if uses_gpu(accelerator):
        return "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def check_gpu_decoding(dataset: dict, trainer_cfg: DictConfig | dict) -> None:
    """``dataset.decode_on=gpu`` where training does not run on a CUDA GPU is refused before any work,
    as ``hardware=gpu`` without one is: the images would be decoded inside the training process,
    one batch after the other, the slowest arrangement there is."""
    if dataset.get("decode_on", "cpu") != "gpu":
        return
    accelerator = str(to_plain(trainer_cfg).get("accelerator", "auto"))
    if not uses_gpu(accelerator) or not torch.cuda.is_available():
        raise ConfigError(
            f"dataset.decode_on=gpu: training runs on the CPU here (trainer.accelerator={accelerator}"
            f"{'' if torch.cuda.is_available() else ', no CUDA GPU visible'}); use dataset.decode_on=cpu, "
            "where the loader's workers decode in parallel"
        )


def build_trainer(trainer_cfg: DictConfig | dict, callbacks: list, logger) -> L.Trainer:
    """The Trainer of train/eval/index: ``precision: auto`` resolved, fp16 AMP on a GPU with the
    authors' GradScaler start (``init_scale=2**10``), checkpoints written atomically."""
    cfg = to_plain(trainer_cfg)
    accelerator = str(cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible here; use hardware=auto or hardware=cpu"
        )
    cfg["precision"] = resolve_precision(accelerator, cfg.get("precision", "32-true"))
    plugins = list(cfg.pop("plugins", None) or [])
    # a user's cluster environment or checkpoint plugin must not replace the GradScaler's start;
    # only a precision plugin of their own does
    amp = cfg["precision"] in ("16-mixed", 16, "16") and uses_gpu(accelerator)
    if amp and not any(is_precision_plugin(p) for p in plugins):
        plugins.append(amp_plugin())
        cfg.pop("precision")
    plugins.append(AtomicCheckpointIO())  # a full disk never leaves a truncated checkpoint
    if cfg.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks = [*callbacks, progress_bar()]  # eval, index: lines, not a bar, in a file
    return instantiate(cfg, callbacks=callbacks, logger=logger, plugins=plugins)


def is_precision_plugin(plugin) -> bool:
    """Whether a ``trainer.plugins`` entry (an object, or a config with ``_target_``) sets the precision."""
    from hydra.utils import get_class
    from lightning.pytorch.plugins.precision import Precision

    if isinstance(plugin, dict) and "_target_" in plugin:
        try:
            plugin = get_class(str(plugin["_target_"]))
        except Exception:  # noqa: BLE001 - instantiating it will name what is wrong
            return False
    cls = plugin if isinstance(plugin, type) else type(plugin)
    return issubclass(cls, Precision)


def amp_plugin(device: str = "cuda"):
    from lightning.pytorch.plugins import MixedPrecision

    return MixedPrecision("16-mixed", device, scaler=torch.amp.GradScaler(device, init_scale=AMP_INIT_SCALE))


def _wandb_needs_offline() -> bool:
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def build_loggers(
    logger_cfg: DictConfig | None, identity: RunIdentity | None = None, config: dict | None = None
) -> list:
    """Loggers from config.  W&B runs get the run's name, group and job type unless the config sets
    them; every logger gets ``config`` (the full resolved config) as hyper-parameters."""
    loggers = []
    for name, conf in (logger_cfg or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        conf = to_plain(conf)
        if "WandbLogger" in conf["_target_"]:
            if _wandb_needs_offline():
                # wandb refuses to start without a key; keep the run local and say so
                os.environ["WANDB_MODE"] = "offline"
                log.warning("no W&B API key found; logging offline (sync later with `wandb sync`)")
            if identity is not None:
                for key in ("name", "group", "job_type"):
                    if conf.get(key) is None:
                        conf[key] = getattr(identity, key)
        try:
            loggers.append(instantiate(conf))
        except (ImportError, ModuleNotFoundError) as exc:
            raise ConfigError(f"logger={name}: {exc}; install the extra (pip install -e '.[{name}]')") from None
    if config is not None:
        for logger in loggers:
            logger.log_hyperparams(config)
    return loggers


def build_callbacks(callbacks_cfg: DictConfig | None, progress_bar: bool = True) -> list[L.Callback]:
    """Callbacks from config; progress bars are left out when the trainer has them disabled
    (``trainer.enable_progress_bar=false`` would otherwise refuse the configured bar)."""
    callbacks = [instantiate(c) for c in (callbacks_cfg or {}).values() if c is not None and "_target_" in c]
    return [c for c in callbacks if progress_bar or not isinstance(c, ProgressBar)]
