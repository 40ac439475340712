"""The loggers: built from config (W&B kept offline without a key), and fed figures and tables
where they can show them (W&B, TensorBoard; CSV keeps files only).

The same PNGs the run writes into its folder, so a dashboard and the run folder never disagree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from PIL import Image

from mean_geo.errors import ConfigError
from mean_geo.training.identity import RunIdentity

log = logging.getLogger(__name__)


def log_images(loggers: Sequence[Logger], images: dict[str, Path], step: int) -> None:
    for logger in loggers:
        for key, path in images.items():
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[str(path)], step=step)
            elif isinstance(logger, TensorBoardLogger):
                with Image.open(path) as img:
                    pixels = np.asarray(img.convert("RGB"))
                logger.experiment.add_image(key, pixels, step, dataformats="HWC")


def log_table(
    loggers: Sequence[Logger], key: str, columns: list[str], rows: list[list], step: int, max_text_rows: int = 50
) -> None:
    """A W&B table; TensorBoard gets the first rows as a Markdown table (it has no table type)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=rows, step=step)
        elif isinstance(logger, TensorBoardLogger):
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows[:max_text_rows]]
            logger.experiment.add_text(key, "\n".join(lines), step)


def finish(loggers: Sequence[Logger]) -> None:
    """End this job's W&B run, so the next job of an in-process sweep starts its own."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def adopt_csv_header(loggers: Sequence[Logger]) -> None:
    """After ``fit`` in spawned processes (``ddp_spawn``: ``hardware=ddp_cpu``), this process's CSV
    logger has not seen the keys the training wrote into metrics.csv, and Lightning's rewrite of the
    header for the test metrics then fails on the old rows.  The file's header becomes its keys.

    Only global rank 0 writes metrics.csv: on the other ranks of ``strategy=ddp`` (every rank runs
    the entry point) ``logger.experiment`` is Lightning's rank-zero dummy, with no file to read."""
    import csv

    from lightning.fabric.utilities.rank_zero import rank_zero_only  # what the loggers' experiment asks
    from lightning.pytorch.loggers import CSVLogger

    if getattr(rank_zero_only, "rank", 0) > 0:
        return
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        writer = logger.experiment
        path = Path(writer.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))


def _wandb_needs_offline() -> bool:
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def build_loggers(logger_cfg: Mapping | None, identity: RunIdentity | None = None, config: dict | None = None) -> list:
    """Loggers from config.  W&B runs get the run's name, group and job type unless the config sets
    them; every logger gets ``config`` (the full resolved config) as hyper-parameters."""
    loggers = []
    for name, conf in (logger_cfg or {}).items():
        if conf is None or "_target_" not in conf:
            continue
        conf = dict(conf)
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
