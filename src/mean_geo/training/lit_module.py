"""The LightningModule: MEAN's multi-loss training and retrieval evaluation in both directions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
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
from mean_geo.retrieval.conventions import evaluate_conventions
from mean_geo.retrieval.evaluate import evaluate
from mean_geo.retrieval.multi_query import check_mode, query_groups
from mean_geo.retrieval.positive_sets import evaluate_positive_sets
from mean_geo.retrieval.rerank import RerankSettings
from mean_geo.training.grad_cache import grad_cached_backward
from mean_geo.training.untrained import untrained_parameters

log = logging.getLogger(__name__)


class MEANLitModule(L.LightningModule):
    """Owns the training step, the optimiser/schedule and the embedding collection for evaluation.

    ``optimizer`` and ``scheduler`` are factories (Hydra ``_partial_: true``): ``optimizer(params)``
    and ``scheduler(optimizer, total_steps=…)``.  ``build_config`` is the checked plain spec of
    the model and loss (:mod:`mean_geo.files.specs`), stored in checkpoints: without ``model``/``loss``
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
        drop_unmatched_gallery: bool | None = True,
        channels_last: bool = False,
        build_config: dict | None = None,
        grad_cache_chunk: int | None = None,
        gradient_clip: tuple[float | None, str] = (None, "norm"),
        multi_query: str = "none",
        flip_tta: bool = False,
        rerank: RerankSettings | None = None,
        backbone_lr_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if model is None or loss is None:
            if not build_config:
                raise CheckpointError("MEANLitModule: give model and loss, or a build_config spec to rebuild them")
            build_config = checkpoint_spec(build_config, "build_config")
            if model is None:  # the weights come from the checkpoint: nothing to download
                offline = {**build_config["model"], "pretrained": False, "weights_file": None}
                model = build_architecture(model_spec(offline))
            loss = loss if loss is not None else build_loss(build_config.get("loss") or {})
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
        self.eval_ks = tuple(eval_ks)
        #: None: the dataset's protocol decides (its datamodule's ``drop_unmatched_gallery``), at setup
        self.drop_unmatched_gallery = drop_unmatched_gallery
        self.channels_last = channels_last
        self.build_config = build_config or {}
        # gradient caching (mean_geo.training.grad_cache): the backbone in chunks of this many pairs,
        # through Lightning's manual optimisation, which then clips gradients itself
        if grad_cache_chunk is not None:  # refused before training starts, not at the first step
            whole_number("grad_cache.chunk_size", grad_cache_chunk, 1)
        self.grad_cache_chunk = grad_cache_chunk
        self.gradient_clip = gradient_clip
        self.automatic_optimization = grad_cache_chunk is None
        # evaluation conventions (recorded in metrics.json): drone queries grouped per place, and
        # the embedding of image + mirrored image (University-1652 lineage; off in MEAN's)
        self.multi_query = check_mode(multi_query)
        self.flip_tta = flip_tta
        self.rerank = rerank  # k-reciprocal re-ranking as extra *_rerank metrics (None: off)
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
        #: recall@1..20 and metres from each query to its top-1 item, per convention (figures)
        self.last_curves: dict[str, list[float]] = {}
        self.last_top1_errors_m: dict[str, torch.Tensor] = {}
        #: single-image D→S metrics per (corruption, severity) of the last test (robustness)
        self.last_corruptions: dict[tuple[str, int], dict[str, float]] = {}

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
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        # (drone, satellite, labels), or with each pair's weight (GTA-UAV's footprint IoU) fourth
        drone, satellite, labels, *rest = batch
        weights = rest[0] if rest else None
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
    def _eval_sets(self) -> list[tuple[str, str]]:
        return list(self.trainer.datamodule.eval_sets)

    def _start_eval(self) -> None:
        self._eval_buffers = {}

    def _eval_step(self, batch, dataloader_idx: int) -> None:
        images, ids, index = batch
        emb = self.embed(self._prep(images))
        self._eval_buffers.setdefault(dataloader_idx, []).append((emb.float(), ids, index))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The L2-normalised retrieval embedding (eval mode); with flip-TTA, of the sum of the
        image's and its mirror image's embeddings."""
        return retrieval_embedding(self.model, images, self.flip_tta)

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

    def setup(self, stage: str) -> None:
        """Lightning's hook: settle the gallery convention the dataset's protocol uses when
        ``eval.drop_unmatched_gallery`` left it open (None), and refuse the conventions a dataset
        evaluated by positive sets (GTA-UAV) has no meaning for, before any work; before fitting,
        freeze what no loss term trains (before DDP wraps the model: see :mod:`mean_geo.training.untrained`)."""
        if stage == "fit":
            self.freeze_untrained()
            if self._trainer is None or self.trainer.is_global_zero:
                log.info("parameters: %s", parameter_counts(self, self.model.backbone))
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.drop_unmatched_gallery is None:
            self.drop_unmatched_gallery = bool(getattr(datamodule, "drop_unmatched_gallery", True))
        by_sets = hasattr(datamodule, "eval_positives")
        if by_sets and (self.rerank is not None or self.multi_query != "none" or datamodule.query_conditions):
            raise ConfigError(
                f"eval.rerank / eval.multi_query / eval.corruptions: {type(datamodule).__name__} is evaluated by "
                "positive sets (true matches shared between queries), without re-ranking, multi-query or "
                "corrupted queries; leave them off"
            )

    def freeze_untrained(self) -> list[str]:
        """Stop training the parameters no term with a weight gives a gradient (a zero-weighted
        term's temperature, say), so DDP needs no ``find_unused_parameters``; returns their names."""
        size = int((self.build_config.get("dataset") or {}).get("image_size") or 224)
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

    def _finish_eval(self, stage: str) -> None:
        sets = self._eval_sets()
        gathered = {i: self._gathered(i) for i in sorted(self._eval_buffers)}
        collected = {sets[i]: found for i, found in gathered.items() if i < len(sets)}
        self.last_embeddings = {k: tuple(t.cpu() for t in v) for k, v in collected.items()}
        metrics: dict[str, float] = {}
        self.last_curves, self.last_top1_errors_m = {}, {}
        for direction in dict.fromkeys(d for d, _ in sets):
            if (direction, "query") not in collected or (direction, "gallery") not in collected:
                continue
            q_emb, q_ids, q_index = collected[(direction, "query")]
            g_emb, g_ids, g_index = collected[(direction, "gallery")]
            positive_sets = self._positive_set_metrics(stage, direction, q_emb, q_index, g_emb, g_index)
            if positive_sets is not None:  # true matches shared between queries (GTA-UAV)
                metrics.update({f"{stage}/{direction}/{key}": value for key, value in positive_sets.items()})
                continue
            multi = self.multi_query if direction == "d2s" else "none"
            q_latlon, g_latlon = self._positions(stage, direction, q_index, g_index)
            results = evaluate_conventions(
                direction,
                q_emb,
                q_ids,
                g_emb,
                g_ids,
                ks=self.eval_ks,
                drop_unmatched_gallery=self.drop_unmatched_gallery,
                multi_query=multi,
                groups=self._query_groups(stage, direction, q_ids, q_index) if multi != "none" else None,
                rerank=self.rerank,
                q_latlon=q_latlon,
                g_latlon=g_latlon,
                position_metrics=getattr(self.trainer.datamodule, "position_metrics", None),
            )
            for name, values in results.metrics.items():
                metrics.update({f"{stage}/{name}/{key}": value for key, value in values.items()})
            covered = results.metrics.get(direction, {}).get("metres_queries")
            if covered is not None and covered < len(q_ids) and self.trainer.is_global_zero:
                log.warning(
                    "%s %s: metres (Dis@K, SDM@K, Acc@Tm) over %d of %d queries; the others, or their top-%d "
                    "tiles, have no coordinates",
                    stage,
                    direction,
                    covered,
                    len(q_ids),
                    max(self.eval_ks),
                )
            self.last_curves.update(results.curves)
            self.last_top1_errors_m.update(results.top1_errors_m)
        conditions = getattr(self.trainer.datamodule, "query_conditions", []) if stage == "test" else []
        corrupted = {conditions[i - len(sets)]: found[:2] for i, found in gathered.items() if i >= len(sets)}
        self.last_corruptions = self._robustness(corrupted, collected.get(("d2s", "gallery")))
        for (name, severity), values in self.last_corruptions.items():
            metrics.update({f"{stage}/d2s_corrupt/{name}_s{severity}/{key}": value for key, value in values.items()})
        if self.last_corruptions:
            for key in ("R@1", "AP"):
                mean = sum(v[key] for v in self.last_corruptions.values()) / len(self.last_corruptions)
                metrics[f"{stage}/d2s_corrupt/mean/{key}"] = mean
                metrics[f"{stage}/d2s_corrupt/mean_drop/{key}"] = metrics[f"{stage}/d2s/{key}"] - mean
        # every rank computed the same numbers from the same gathered data: no sync needed
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key.endswith("d2s/R@1"), sync_dist=False)
        self.last_metrics = metrics
        self._eval_buffers = {}

    def _robustness(self, corrupted: dict, gallery) -> dict[tuple[str, int], dict[str, float]]:
        """Single-image D→S metrics of the corrupted queries against the clean gallery."""
        if not corrupted or gallery is None:
            return {}
        g_emb, g_ids, _ = gallery
        return {
            condition: evaluate(q_emb, q_ids, g_emb, g_ids, self.eval_ks, self.drop_unmatched_gallery)
            for condition, (q_emb, q_ids) in corrupted.items()
        }

    def _positive_set_metrics(self, stage, direction, q_emb, q_index, g_emb, g_index) -> dict[str, float] | None:
        """Metrics by positive sets where the datamodule gives them (GTA-UAV), else None."""
        dm = self.trainer.datamodule
        positives = dm.eval_positives(stage, direction) if hasattr(dm, "eval_positives") else None
        if positives is None:
            return None
        column = {int(i): c for c, i in enumerate(g_index.tolist())}
        rows = [[column[i] for i in positives[int(q)]] for q in q_index.tolist()]
        q_xy = dm.eval_positions_m(stage, direction, "query")[q_index.cpu()]
        g_xy = dm.eval_positions_m(stage, direction, "gallery")[g_index.cpu()]
        return evaluate_positive_sets(q_emb, g_emb, rows, self.eval_ks, q_xy, g_xy)

    def _positions(self, stage, direction, q_index, g_index) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Where the drone queries were and where the gallery tiles are, when known (D→S only)."""
        if direction != "d2s":
            return None, None
        dm = self.trainer.datamodule
        where = {role: dm.eval_coordinates(stage, "d2s", role) for role in ("query", "gallery")}
        if where["query"] is None or where["gallery"] is None:
            return None, None
        return where["query"][q_index.cpu()], where["gallery"][g_index.cpu()]

    def _query_groups(self, stage, direction, q_ids, q_index) -> tuple[torch.Tensor, torch.Tensor]:
        """One group per place, or per place and altitude where the set has several altitudes."""
        altitudes = self.trainer.datamodule.eval_altitudes(stage, direction, "query")
        chosen = [altitudes[i] for i in q_index.tolist()]
        per_altitude = len({a for a in chosen if a is not None}) > 1
        alt = torch.tensor([a or 0 for a in chosen], device=q_ids.device) if per_altitude else None
        return query_groups(q_ids, alt)

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
