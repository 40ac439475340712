"""A callback that makes a healthy run diverge at a chosen epoch (for the divergence guard's tests):
the learning rate jumps to a value no network survives."""

from __future__ import annotations

import lightning as L


class LearningRateJump(L.Callback):
    def __init__(self, epoch: int, lr: float) -> None:
        self.epoch, self.lr = epoch, lr

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            for scheduler in trainer.lr_scheduler_configs:
                scheduler.scheduler.base_lrs = [self.lr for _ in scheduler.scheduler.base_lrs]
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = self.lr
