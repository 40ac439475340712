"""The LightningModule: MEAN's multi-loss training and retrieval evaluation in both directions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch

from mean_geo.errors import CheckpointError
from mean_geo.files.checkpoints import read_checkpoint
from mean_geo.files.recipes import build_loss, build_model, checkpoint_recipe
from mean_geo.losses import MEANLoss
from mean_geo.models.mean import MEAN
from mean_geo.retrieval.evaluate import evaluate


class MEANLitModule(L.LightningModule):
    """Owns the training step, the optimiser/schedule and the embedding collection for evaluation.

    ``optimizer`` and ``scheduler`` are factories (Hydra ``_partial_: true``): ``optimizer(params)``
    and ``scheduler(optimizer, total_steps=…)``.  ``build_config`` is the checked plain recipe of
    the model and loss (:mod:`mean_geo.files.recipes`), stored in checkpoints: without ``model``/``loss``
    they are rebuilt from it (no pretrained download: the weights come from the checkpoint), which
    is what ``mean_geo.eval`` and ``MEANLitModule.load_from_checkpoint(path)`` do.
    """

    def __init__(
        self,
        model: MEAN | None = None,
        loss: MEANLoss | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        eval_ks: Sequence[int] = (1, 5, 10),
        drop_unmatched_gallery: bool = True,
        channels_last: bool = False,
        build_config: dict | None = None,
    ) -> None:
        super().__init__()
        if model is None or loss is None:
            if not build_config:
                raise CheckpointError("MEANLitModule: give model and loss, or a build_config recipe to rebuild them")
            build_config = checkpoint_recipe(build_config, "build_config")
            model = (
                model if model is not None else build_model(build_config["model"], pretrained=False, weights_file=None)
            )
            loss = loss if loss is not None else build_loss(build_config.get("loss") or {})
        self.model = model
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.eval_ks = tuple(eval_ks)
        self.drop_unmatched_gallery = drop_unmatched_gallery
        self.channels_last = channels_last
        self.build_config = build_config or {}
        self.save_hyperparameters(
            {
                "eval_ks": list(self.eval_ks),
                "drop_unmatched_gallery": drop_unmatched_gallery,
                "build_config": self.build_config,
            }
        )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._eval_buffers: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        #: embeddings of the last evaluation, per (direction, role): (emb, ids, dataset index)
        self.last_embeddings: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.last_metrics: dict[str, float] = {}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):  # type: ignore[override]
        """Lightning's loader, after the file was read without unpickling and its recipe checked, so
        a foreign or crafted checkpoint ends in one :class:`CheckpointError` line."""
        if isinstance(checkpoint_path, (str, Path)):
            read_checkpoint(checkpoint_path, "checkpoint_path")
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # --- training ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        drone, satellite, labels = batch
        # branch BatchNorm statistics stay per view, as in the reference's two calls
        terms = self.loss(*self.model.forward_pair(self._prep(drone), self._prep(satellite)), labels)
        bs = labels.shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=bs)
        self.log("train/temperature", self.loss.infonce.temperature, batch_size=bs)
        return terms["loss"]

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer factory given")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- evaluation --------------------------------------------------------------------------------
    def _eval_sets(self) -> list[tuple[str, str]]:
        return list(self.trainer.datamodule.eval_sets)

    def _start_eval(self) -> None:
        self._eval_buffers = {}

    def _eval_step(self, batch, dataloader_idx: int) -> None:
        images, ids, index = batch
        emb = self.model(self._prep(images))  # eval mode: L2-normalised embedding
        self._eval_buffers.setdefault(dataloader_idx, []).append((emb.float(), ids, index))

    def _gathered(self, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = self._eval_buffers.get(dataloader_idx, [])
        emb = torch.cat([p[0] for p in parts])
        ids = torch.cat([p[1] for p in parts])
        index = torch.cat([p[2] for p in parts])
        if self.trainer.world_size > 1:
            # DistributedSampler gives every rank the same count (padding with repeats)
            emb, ids, index = (self.all_gather(t).flatten(0, 1) for t in (emb, ids, index))
        # drop the padding repeats and restore dataset order
        order = torch.argsort(index, stable=True)
        emb, ids, index = emb[order], ids[order], index[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        return emb[keep], ids[keep], index[keep]

    def _finish_eval(self, stage: str) -> None:
        sets = self._eval_sets()
        collected = {sets[i]: self._gathered(i) for i in sorted(self._eval_buffers)}
        self.last_embeddings = {k: tuple(t.cpu() for t in v) for k, v in collected.items()}
        metrics: dict[str, float] = {}
        for direction in dict.fromkeys(d for d, _ in sets):
            if (direction, "query") not in collected or (direction, "gallery") not in collected:
                continue
            q_emb, q_ids, _ = collected[(direction, "query")]
            g_emb, g_ids, _ = collected[(direction, "gallery")]
            result = evaluate(
                q_emb, q_ids, g_emb, g_ids, ks=self.eval_ks, drop_unmatched_gallery=self.drop_unmatched_gallery
            )
            for key, value in result.items():
                metrics[f"{stage}/{direction}/{key}"] = value
        # every rank computed the same numbers from the same gathered data: no sync needed
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key.endswith("d2s/R@1"), sync_dist=False)
        self.last_metrics = metrics
        self._eval_buffers = {}

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._finish_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")
