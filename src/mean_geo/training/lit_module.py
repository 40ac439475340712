"""The LightningModule: MEAN's multi-loss training; its val/test steps embed and feed the evaluator.

Evaluation itself is :class:`~mean_geo.retrieval.evaluator.RetrievalEvaluator`'s: a batch names its
set and carries its truth, so this module never reads the datamodule back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch

from mean_geo.errors import CheckpointError, ConfigError, TrainingDiverged, whole_number
from mean_geo.files.checkpoints import read_checkpoint
from mean_geo.files.specs import checkpoint_spec, model_spec
from mean_geo.losses import MEANLoss, build_loss
from mean_geo.models.finetune import parameter_counts
from mean_geo.models.mean import MEAN, retrieval_embedding
from mean_geo.models.registry import build_architecture
from mean_geo.retrieval.evaluator import EvalReport, RetrievalEvaluator
from mean_geo.retrieval.options import EvalOptions
from mean_geo.training.grad_cache import grad_cached_backward
from mean_geo.training.untrained import untrained_parameters

log = logging.getLogger(__name__)


class MEANLitModule(L.LightningModule):
    """Owns the training step, the optimiser/schedule, and feeds evaluation batches to the evaluator.

    ``optimizer`` and ``scheduler`` are factories (Hydra ``_partial_: true``): ``optimizer(params)``
    and ``scheduler(optimizer, total_steps=…)``.  ``spec`` is the checked plain spec of
    the model and loss (:mod:`mean_geo.files.specs`), stored in checkpoints: without ``model``/``loss``
    they are rebuilt from it (no pretrained download: the weights come from the checkpoint), which
    is what ``mean_geo.eval`` and ``MEANLitModule.load_from_checkpoint(path)`` do.

    ``eval_options`` are the run's evaluation conventions resolved against the dataset's protocol
    (:meth:`~mean_geo.retrieval.options.EvalOptions.for_dataset`); left unresolved, the gallery
    convention is MEAN's (unmatched gallery places dropped).  ``eval_ks``, ``drop_unmatched_gallery``
    and ``build_config`` (the spec's old name) are what checkpoints of earlier versions stored; they
    still load.
    """

    def __init__(
        self,
        model: MEAN | None = None,
        loss: MEANLoss | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        eval_options: EvalOptions | None = None,
        channels_last: bool = False,
        spec: dict | None = None,
        grad_cache_chunk: int | None = None,
        gradient_clip: tuple[float | None, str] = (None, "norm"),
        backbone_lr_factor: float = 1.0,
        eval_ks: Sequence[int] | None = None,
        drop_unmatched_gallery: bool | None = None,
        build_config: dict | None = None,
    ) -> None:
        super().__init__()
        spec = spec or build_config  # checkpoints of earlier versions stored the spec as build_config
        if model is None or loss is None:
            if not spec:
                raise CheckpointError("MEANLitModule: give model and loss, or a spec to rebuild them")
            spec = checkpoint_spec(spec, "spec")
            if model is None:  # the weights come from the checkpoint: nothing to download
                offline = {**spec["model"], "pretrained": False, "weights_file": None}
                model = build_architecture(model_spec(offline))
            loss = loss if loss is not None else build_loss(spec.get("loss") or {})
        self.model = model
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if (
            isinstance(backbone_lr_factor, bool)
            or not isinstance(backbone_lr_factor, (int, float))
            or not (0 < backbone_lr_factor)
        ):
            raise ConfigError(f"optim.backbone_lr_factor={backbone_lr_factor!r}: expected a number > 0")
        #: the backbone's learning rate relative to the rest (a foundation backbone is often tuned slower)
        self.backbone_lr_factor = float(backbone_lr_factor)
        if eval_options is None:  # a checkpoint's stored hyper-parameters (earlier versions), or none
            eval_options = EvalOptions(
                ks=tuple(eval_ks or EvalOptions.ks), drop_unmatched_gallery=drop_unmatched_gallery
            )
        if eval_options.drop_unmatched_gallery is None:  # not resolved against a protocol: MEAN's
            eval_options = replace(eval_options, drop_unmatched_gallery=True)
        self.eval_options = eval_options
        self.evaluator = RetrievalEvaluator(eval_options)
        #: what the last evaluation found (metrics, sets, rankings): the results writer reads it
        self.last_report: EvalReport | None = None
        self.channels_last = channels_last
        self.spec = spec or {}
        # gradient caching (mean_geo.training.grad_cache): the backbone in chunks of this many pairs,
        # through Lightning's manual optimisation, which then clips gradients itself
        if grad_cache_chunk is not None:  # refused before training starts, not at the first step
            whole_number("grad_cache.chunk_size", grad_cache_chunk, 1)
        self.grad_cache_chunk = grad_cache_chunk
        self.gradient_clip = gradient_clip
        self.automatic_optimization = grad_cache_chunk is None
        self.save_hyperparameters(
            {
                "eval_ks": list(eval_options.ks),
                "drop_unmatched_gallery": eval_options.drop_unmatched_gallery,
                "spec": self.spec,
            }
        )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):  # type: ignore[override]
        """Lightning's loader, after the file was read without unpickling and its spec checked, so
        a foreign or crafted checkpoint ends in one :class:`CheckpointError` line."""
        if isinstance(checkpoint_path, (str, Path)):
            read_checkpoint(checkpoint_path, "checkpoint_path")
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # --- training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # {drone, satellite, label}, and each pair's weight where pairs have one (GTA-UAV's footprint IoU)
        drone, satellite, labels = batch["drone"], batch["satellite"], batch["label"]
        weights = batch.get("weight")
        if drone.dtype == torch.uint8 or satellite.dtype == torch.uint8:
            raise ConfigError(
                "a training batch arrived as uint8 images: train with the datamodule (its "
                "on_after_batch_transfer normalises them) or normalise with mean_geo.data.augment.normalize_batch"
            )
        if self.automatic_optimization:
            # branch BatchNorm statistics stay per view, as in the reference's two calls
            outputs = self.model.forward_pair(self._prep(drone), self._prep(satellite))
            terms = (
                self.loss(*outputs, labels) if weights is None else self.loss(*outputs, labels, pair_weights=weights)
            )
        elif weights is not None:
            raise ConfigError("grad_cache: pairs with weights (GTA-UAV) are not chunked; train without grad_cache")
        else:
            terms = self._grad_cached_step(self._prep(drone), self._prep(satellite), labels)
        if self.automatic_optimization:  # before Lightning's backward and step: the weights stay as they are
            self._stop_if_diverged(terms)
        bs = labels.shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=bs)
        for name, value in self.loss.monitored().items():  # the learnt temperature(s) and weights
            self.log(f"train/{name}", value, batch_size=bs)
        return terms["loss"]

    def _grad_cached_step(self, drone, satellite, labels) -> dict[str, torch.Tensor]:
        """One optimiser step of the whole batch with the backbone run in chunks."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        strategy = self.trainer.strategy
        # several backward passes per step: DDP's per-backward all-reduce is held back, and the
        # accumulated gradients are averaged across ranks once, below
        with getattr(strategy, "block_backward_sync", contextlib.nullcontext)():
            terms = grad_cached_backward(
                self.model, self.loss, drone, satellite, labels, self.grad_cache_chunk, backward=self.manual_backward
            )
        self._stop_if_diverged(terms)  # before the step: the weights stay as they are
        if self.trainer.world_size > 1:
            self._average_gradients_across_ranks()
        optimizer.step()  # AMP: unscales, then on_before_optimizer_step clips, then steps (or skips)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        return terms

    def _stop_if_diverged(self, terms: dict[str, torch.Tensor]) -> None:
        """Stop at the first non-finite loss, before its update: NaN weights would otherwise train
        on to the end, be checkpointed and be ranked.  Every rank decides together (DDP)."""
        finite = bool(torch.isfinite(terms["loss"].detach()).all())
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        parts = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in terms.items() if k != "loss")
        group = self.trainer.optimizers[0].param_groups[0]
        configured = group.get("initial_lr", group["lr"])
        raise TrainingDiverged(
            f"training diverged at step {self.trainer.global_step + 1} (epoch {self.current_epoch + 1}): "
            f"loss {float(terms['loss'].detach()):.4g} ({parts}) at lr {group['lr']:.3g}; lower the learning rate "
            f"(optim.optimizer.lr={configured:g} now) or clip harder (trainer.gradient_clip_val); "
            f"{self._last_good_checkpoint()}"
        )

    def _last_good_checkpoint(self) -> str:
        """What is left of the run: the checkpoints written before the loss went bad are kept as they are."""
        callback = self.trainer.checkpoint_callback
        paths = [getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")]
        found = [p for p in paths if p and Path(p).is_file()]
        if not found:
            return "no checkpoint had been written yet (one is written at the end of each epoch)"
        return f"the last good checkpoint is kept: {found[0]}"

    def _average_gradients_across_ranks(self) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat /= self.trainer.world_size
        for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
            grad.copy_(synced)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Manual optimisation (gradient caching) clips here, after AMP's unscaling, as Lightning
        does by itself in automatic optimisation (``trainer.gradient_clip_val``)."""
        value, algorithm = self.gradient_clip
        if not self.automatic_optimization and value:
            self.clip_gradients(optimizer, gradient_clip_val=value, gradient_clip_algorithm=algorithm)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise RuntimeError("no optimizer factory given")
        optimizer = self.optimizer_factory(params=self._parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _parameter_groups(self):
        """Every parameter in one group, or with ``optim.backbone_lr_factor`` the backbone's in a
        group of its own at that share of the learning rate (the schedule scales both alike)."""
        if self.backbone_lr_factor == 1.0:
            return self.parameters()
        lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if lr is None:
            raise ConfigError("optim.backbone_lr_factor: the optimizer factory names no lr to scale")
        backbone = list(self.model.backbone.parameters())
        mine = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if id(p) not in mine]
        return [{"params": backbone, "lr": lr * self.backbone_lr_factor}, {"params": rest}]

    # --- evaluation --------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The L2-normalised retrieval embedding (eval mode); with flip-TTA, of the sum of the
        image's and its mirror image's embeddings."""
        return retrieval_embedding(self.model, images, self.eval_options.flip_tta)

    def _eval_step(self, batch: dict) -> None:
        self.evaluator.update(batch["key"], self.embed(self._prep(batch["image"])), batch)

    def _finish_eval(self, stage: str) -> None:
        report = self.evaluator.compute(stage, device=self.device)
        # every rank computed the same numbers from the same gathered data: no sync needed
        for key, value in report.scalars().items():
            self.log(key, value, prog_bar=key.endswith("d2s/R@1"), sync_dist=False)
        self.last_report = report
        self.evaluator.reset()

    def setup(self, stage: str) -> None:
        """Lightning's hook: before fitting, freeze what no loss term trains (before DDP wraps the
        model: see :mod:`mean_geo.training.untrained`)."""
        if stage == "fit":
            self.freeze_untrained()
            if self._trainer is None or self.trainer.is_global_zero:
                log.info("parameters: %s", parameter_counts(self, self.model.backbone))

    def freeze_untrained(self) -> list[str]:
        """Stop training the parameters no term with a weight gives a gradient (a zero-weighted
        term's temperature, say), so DDP needs no ``find_unused_parameters``; returns their names."""
        size = int((self.spec.get("dataset") or {}).get("image_size") or 224)
        try:
            names = untrained_parameters(self.model, self.loss, size)
        except Exception as exc:  # noqa: BLE001 - an op without a meta kernel (a plugin's): train as before
            log.warning("could not look for parameters no loss term trains (%s: %s)", type(exc).__name__, exc)
            return []
        if names:
            found = dict(self.named_parameters())
            for name in names:
                found[name].requires_grad_(False)
            log.info("not trained (no loss term with a weight above 0 uses them): %s", ", ".join(names))
        return names

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._finish_eval("val")

    def on_test_epoch_start(self) -> None:
        self.evaluator.reset()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")
