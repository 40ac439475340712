"""Progress into the run's log (console and ``<task>.log``), rank zero only: per epoch the steps,
the step rate (to compare machines) and the loss (:class:`ProgressLog`); and, where the output is
not a terminal, periodic one-line progress instead of a progress bar (:func:`progress_bar`)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class LineProgressBar(ProgressBar):
    """Progress as one log line every ``every_s`` seconds (and at the end of each epoch): step,
    steps/s, loss, time left.  A bar redrawn in a file is one line per step, unreadable; these
    lines go where the run's other log lines go (the console and ``<task>.log``)."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self._fit_start = self._last = self._eval_start = 0.0
        self._fit_first_step = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = self._last = time.perf_counter()
        self._fit_first_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        last_of_epoch = batch_idx + 1 >= self.total_train_batches
        if not (self._enabled and trainer.is_global_zero) or (now - self._last < self.every_s and not last_of_epoch):
            return
        self._last = now
        done = trainer.global_step - self._fit_first_step
        rate = done / max(now - self._fit_start, 1e-9)
        total = trainer.estimated_stepping_batches
        left = f", {_duration((total - trainer.global_step) / rate)} left" if rate > 0 and total != float("inf") else ""
        loss = trainer.callback_metrics.get("train/loss")
        log.info(
            "epoch %d/%d, step %d/%s: %.2f steps/s%s%s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            trainer.global_step,
            "?" if total == float("inf") else int(total),
            rate,
            "" if loss is None else f", loss {float(loss):.4f}",
            left,
        )

    def _evaluated(self, trainer: L.Trainer, what: str) -> None:
        if self._enabled and trainer.is_global_zero and not trainer.sanity_checking:
            log.info("%s: done in %s", what, _duration(time.perf_counter() - self._eval_start))

    def on_validation_start(self, trainer, pl_module) -> None:
        self._eval_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._evaluated(trainer, "validation")

    def on_test_start(self, trainer, pl_module) -> None:
        self._eval_start = time.perf_counter()

    def on_test_end(self, trainer, pl_module) -> None:
        self._evaluated(trainer, "test")

    def on_predict_start(self, trainer, pl_module) -> None:
        self._eval_start = time.perf_counter()

    def on_predict_end(self, trainer, pl_module) -> None:
        self._evaluated(trainer, "embedding")


def progress_bar(refresh_rate: int = 1, every_s: float = 30.0, stream: TextIO | None = None) -> ProgressBar:
    """Lightning's bar on a terminal; :class:`LineProgressBar` when the output goes to a file or a
    pipe (``make train > log.txt``, SLURM, CI), where the run's log lines go too."""
    streams = [stream] if stream is not None else [sys.stdout, sys.stderr]
    if all(getattr(s, "isatty", lambda: False)() for s in streams):
        return TQDMProgressBar(refresh_rate=refresh_rate)
    return LineProgressBar(every_s=every_s)
