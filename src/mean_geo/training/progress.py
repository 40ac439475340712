"""Milestones into the run's log (console and ``<task>.log``): per epoch the steps, the step rate
(to compare machines) and the loss; rank zero only."""

from __future__ import annotations

import logging
import time

import lightning as L

log = logging.getLogger(__name__)


class ProgressLog(L.Callback):
    def __init__(self) -> None:
        self._epoch_start = 0.0
        self._fit_start = 0.0
        self._first_step = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        if trainer.is_global_zero:
            log.info(
                "fit: %d epochs, %d optimizer steps, %s precision on %s x%d",
                trainer.max_epochs,
                trainer.estimated_stepping_batches,
                trainer.precision,
                type(trainer.accelerator).__name__.replace("Accelerator", "").lower(),
                trainer.world_size,
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start, self._first_step = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._epoch_start
        steps = trainer.global_step - self._first_step
        loss = trainer.callback_metrics.get("train/loss")
        log.info(
            "epoch %d/%d: %d steps in %.0f s (%.2f steps/s)%s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            steps,
            seconds,
            steps / max(seconds, 1e-9),
            "" if loss is None else f", loss {float(loss):.4f}",
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info("fit done: %d steps in %.0f s", trainer.global_step, time.perf_counter() - self._fit_start)
