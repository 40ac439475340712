"""Retrieval evaluation as an object: fed batch by batch, gathered across ranks, computed once.

:class:`RetrievalEvaluator` is what the LightningModule's val/test steps feed
(``update(key, embeddings, batch)``) and what its epoch end reads (``compute(stage)`` ->
:class:`EvalReport`); it needs no Trainer and no datamodule: the batch names its set
(:class:`~mean_geo.data.eval_sets.EvalKey`) and carries each image's truth.

The collection is a ``torchmetrics.Metric`` with ``cat`` states (:class:`EmbeddingCollector`):
torchmetrics gathers the states across ranks (shards of different sizes included), its
``compute()`` drops the samples DDP's sampler repeats as padding (by dataset index) and restores
the dataset's order; ``compute_on_cpu`` keeps large galleries off the accelerator.  The numbers are
computed by the field's protocol code (:mod:`mean_geo.retrieval.conventions`,
:mod:`mean_geo.retrieval.positive_sets`), not by torchmetrics' retrieval metrics, which zero negative
scores, break ties without a fixed rule and define AP otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from mean_geo.data.eval_sets import EvalKey
from mean_geo.retrieval.conventions import evaluate_conventions
from mean_geo.retrieval.evaluate import evaluate, matched_gallery
from mean_geo.retrieval.multi_query import query_groups
from mean_geo.retrieval.options import EvalOptions
from mean_geo.retrieval.positive_sets import evaluate_positive_sets
from mean_geo.retrieval.search import topk_search

log = logging.getLogger(__name__)

#: the per-image truth a batch may carry (mean_geo.data.eval_sets)
TRUTH_FIELDS = ("altitude", "latlon", "footprint", "position_m", "positives")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_on_backend(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
    """torchmetrics' gather, for states kept on the CPU (``compute_on_cpu``) under NCCL too.

    NCCL gathers device tensors only: the CPU state travels through the current CUDA device and
    comes back to the CPU.
    """
    if tensor.device.type == "cpu" and torch.distributed.get_backend(group) == "nccl":
        moved = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        return [part.cpu() for part in gather_all_tensors(moved, group)]
    return gather_all_tensors(tensor, group)


class EmbeddingCollector(Metric):
    """One evaluation set's embeddings, place ids, dataset indices and truth, across batches and ranks.

    Args:
        fields: the truth fields its batches carry (:data:`TRUTH_FIELDS`).
        compute_on_cpu: keep the collected states on the CPU after each update.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, fields: Sequence[str] = (), compute_on_cpu: bool = True) -> None:
        super().__init__(compute_on_cpu=compute_on_cpu, dist_sync_fn=gather_on_backend)
        self.columns = ("embedding", "place", "index", *fields)
        for name in self.columns:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, columns: dict[str, torch.Tensor]) -> None:  # type: ignore[override]
        """Append one batch (every column, first dimension the batch)."""
        for name in self.columns:
            getattr(self, name).append(columns[name].detach())

    def compute(self) -> dict[str, torch.Tensor]:
        """Every column in dataset order, each dataset index once (DDP's padding repeats dropped)."""
        found = {name: dim_zero_cat(getattr(self, name)) for name in self.columns}
        order = torch.argsort(found["index"], stable=True)
        found = {name: values[order] for name, values in found.items()}
        index = found["index"]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        return {name: values[keep] for name, values in found.items()}


@dataclass
class CollectedSet:
    """One evaluation set as evaluated: dataset order, each image once."""

    key: EvalKey
    embeddings: torch.Tensor  # (N, D) float32, L2-normalised
    places: torch.Tensor  # (N,) place ids
    indices: torch.Tensor  # (N,) the set's dataset indices
    paths: list[Path]
    locations: list[str]  # place names
    truth: dict[str, torch.Tensor] = field(default_factory=dict)

    def subset(self, keep: torch.Tensor) -> CollectedSet:
        """The images where ``keep`` (a bool mask) is true."""
        keep = keep.cpu()
        rows = keep.nonzero().flatten().tolist()

        def pick(values: torch.Tensor) -> torch.Tensor:
            return values[keep.to(values.device)]

        return CollectedSet(
            self.key,
            pick(self.embeddings),
            pick(self.places),
            pick(self.indices),
            [self.paths[i] for i in rows],
            [self.locations[i] for i in rows],
            {name: pick(values) for name, values in self.truth.items()},
        )

    def cpu(self) -> CollectedSet:
        """The same set with every tensor on the CPU (what results are written from)."""
        return CollectedSet(
            self.key,
            self.embeddings.cpu(),
            self.places.cpu(),
            self.indices.cpu(),
            self.paths,
            self.locations,
            {name: values.cpu() for name, values in self.truth.items()},
        )

    @property
    def altitudes(self) -> list[int | None]:
        """Each image's altitude in metres (None where the layout has none)."""
        values = self.truth.get("altitude")
        if values is None:
            return [None] * len(self.paths)
        return [None if math.isnan(a) else int(a) for a in values.tolist()]

    @property
    def footprints(self) -> list[list[tuple[float, float]] | None] | None:
        """Each image's ground footprint (four lat/lon corners) or None; None when none has one."""
        values = self.truth.get("footprint")
        if values is None:
            return None
        return [None if torch.isnan(fp).any() else [(float(a), float(b)) for a, b in fp.tolist()] for fp in values]

    @property
    def latlon(self) -> torch.Tensor | None:
        """``(N, 2)`` degrees, NaN rows where unknown; None when no image's position is known."""
        values = self.truth.get("latlon")
        if values is None or bool(torch.isnan(values[:, 0]).all()):
            return None
        return values.double().cpu()


@dataclass
class DirectionResult:
    """One direction of an evaluation: its sets and every query's best gallery items."""

    query: CollectedSet
    gallery: CollectedSet  # the gallery the metrics ranked (unmatched places dropped under that convention)
    full_gallery: CollectedSet  # every gallery image of the set
    scores: torch.Tensor  # (Q, k) of the best ``ranking_k`` items, best first
    top: torch.Tensor  # (Q, k) their rows in ``gallery``


@dataclass
class EvalReport:
    """Everything one evaluation found: what is logged, written to metrics.json and drawn.

    Attributes:
        stage: ``val`` or ``test``.
        options: the resolved options it ran under.
        metrics: ``<stage>/<convention>/<metric>`` -> value.
        conventions: the convention names, in the order they were computed.
        curves: recall@1..20 per convention.
        top1_errors_m: metres from each query to its top-1 item, per convention (where positions are known).
        corruptions: single-image D->S metrics per ``(corruption, severity)``.
        directions: per direction, its sets and rankings.
    """

    stage: str
    options: EvalOptions
    metrics: dict[str, float] = field(default_factory=dict)
    conventions: list[str] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)
    top1_errors_m: dict[str, torch.Tensor] = field(default_factory=dict)
    corruptions: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    directions: dict[str, DirectionResult] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """What is logged (every metric)."""
        return dict(self.metrics)


class RetrievalEvaluator:
    """Collects evaluation batches per set and computes the protocol's metrics.

    Args:
        options: the resolved evaluation options (:meth:`EvalOptions.for_dataset`).
        compute_on_cpu: keep collected embeddings on the CPU (large galleries).
    """

    def __init__(self, options: EvalOptions, compute_on_cpu: bool = True) -> None:
        self.options = options
        self.compute_on_cpu = compute_on_cpu
        self._collectors: dict[EvalKey, EmbeddingCollector] = {}
        self._names: dict[EvalKey, dict[int, tuple[str, str]]] = {}

    def reset(self) -> None:
        """Forget what was collected (each evaluation epoch starts empty)."""
        self._collectors, self._names = {}, {}

    def update(self, key: EvalKey, embeddings: torch.Tensor, batch: dict) -> None:
        """Add one batch of a set.

        Args:
            key: the set (``batch["key"]``).
            embeddings: ``(B, D)`` of the batch's images.
            batch: the evaluation batch (``place``, ``index``, ``path``, ``location`` and its truth).
        """
        key = EvalKey(*key)
        if key not in self._collectors:
            fields = [name for name in TRUTH_FIELDS if name in batch]
            self._collectors[key] = EmbeddingCollector(fields, self.compute_on_cpu)
            self._names[key] = {}
        collector = self._collectors[key]
        columns = {name: batch[name] for name in collector.columns if name != "embedding"}
        collector.update({"embedding": embeddings.float(), **columns})
        names = self._names[key]
        for index, path, location in zip(batch["index"].tolist(), batch["path"], batch["location"], strict=True):
            names[index] = (path, location)

    @property
    def keys(self) -> list[EvalKey]:
        """The sets collected so far, in the order they arrived."""
        return list(self._collectors)

    def collected(self, key: EvalKey, device: torch.device | str | None = None) -> CollectedSet:
        """One set, gathered from every rank (every rank calls this for the same keys); its
        embeddings and place ids on ``device`` (where the metrics are computed), the truth on the CPU."""
        found = self._collectors[key].compute()
        if device is not None:
            found = {**found, "embedding": found["embedding"].to(device), "place": found["place"].to(device)}
        names = self._names[key]
        if _distributed() and torch.distributed.get_world_size() > 1:
            everyone: list[dict] = [{} for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather_object(everyone, names)
            names = {i: name for part in everyone for i, name in part.items()}
        paths, locations = zip(*(names[i] for i in found["index"].tolist()), strict=True)
        truth = {name: found[name].cpu() for name in TRUTH_FIELDS if name in found}
        return CollectedSet(
            key, found["embedding"], found["place"], found["index"], [Path(p) for p in paths], list(locations), truth
        )

    def compute(self, stage: str, device: torch.device | str | None = None) -> EvalReport:
        """The metrics of every direction collected, then of the corrupted queries.

        Args:
            stage: ``val`` or ``test`` (the metric keys' first part).
            device: where the metrics are computed (the model's device); None: where collected.

        Returns:
            The report.
        """
        options = self.options
        sets = {key: self.collected(key, device) for key in self.keys}
        report = EvalReport(stage, options)
        for direction in dict.fromkeys(key.direction for key in sets if key.clean):
            query, gallery = sets.get(EvalKey(direction, "query")), sets.get(EvalKey(direction, "gallery"))
            if query is None or gallery is None:
                continue
            self._direction(report, direction, query, gallery)
        clean_gallery = sets.get(EvalKey("d2s", "gallery"))
        for key, found in sets.items():
            if key.condition is not None and clean_gallery is not None:
                report.corruptions[key.condition] = evaluate(
                    found.embeddings,
                    found.places,
                    clean_gallery.embeddings,
                    clean_gallery.places,
                    options.ks,
                    bool(options.drop_unmatched_gallery),
                )
        for (name, severity), values in report.corruptions.items():
            report.metrics.update({f"{stage}/d2s_corrupt/{name}_s{severity}/{k}": v for k, v in values.items()})
        if report.corruptions:
            for k in ("R@1", "AP"):
                mean = sum(v[k] for v in report.corruptions.values()) / len(report.corruptions)
                report.metrics[f"{stage}/d2s_corrupt/mean/{k}"] = mean
                report.metrics[f"{stage}/d2s_corrupt/mean_drop/{k}"] = report.metrics[f"{stage}/d2s/{k}"] - mean
        return report

    def _direction(self, report: EvalReport, direction: str, query: CollectedSet, gallery: CollectedSet) -> None:
        options, stage = self.options, report.stage
        if "positives" in query.truth:  # true matches shared between queries (GTA-UAV)
            column = {int(i): c for c, i in enumerate(gallery.indices.tolist())}
            rows = [[column[i] for i in row if i >= 0] for row in query.truth["positives"].tolist()]
            found = evaluate_positive_sets(
                query.embeddings,
                gallery.embeddings,
                rows,
                options.ks,
                query.truth["position_m"].cpu(),
                gallery.truth["position_m"].cpu(),
            )
            report.metrics.update({f"{stage}/{direction}/{k}": v for k, v in found.items()})
            report.conventions.append(direction)
            ranked = gallery
        else:
            multi = options.multi_query if direction == "d2s" else "none"
            q_latlon, g_latlon = (query.latlon, gallery.latlon) if direction == "d2s" else (None, None)
            if q_latlon is None or g_latlon is None:
                q_latlon = g_latlon = None
            results = evaluate_conventions(
                direction,
                query.embeddings,
                query.places,
                gallery.embeddings,
                gallery.places,
                ks=options.ks,
                drop_unmatched_gallery=bool(options.drop_unmatched_gallery),
                multi_query=multi,
                groups=self._groups(query) if multi != "none" else None,
                rerank=options.rerank,
                q_latlon=q_latlon,
                g_latlon=g_latlon,
                position_metrics=options.position_metrics,
            )
            for name, values in results.metrics.items():
                report.metrics.update({f"{stage}/{name}/{k}": v for k, v in values.items()})
                report.conventions.append(name)
            covered = results.metrics.get(direction, {}).get("metres_queries")
            if covered is not None and covered < len(query.paths) and _is_rank_zero():
                log.warning(
                    "%s %s: metres (Dis@K, SDM@K, Acc@Tm) over %d of %d queries; the others, or their top-%d "
                    "tiles, have no coordinates",
                    stage,
                    direction,
                    covered,
                    len(query.paths),
                    max(options.ks),
                )
            report.curves.update(results.curves)
            report.top1_errors_m.update(results.top1_errors_m)
            keep = (
                matched_gallery(query.places, gallery.places)
                if options.drop_unmatched_gallery
                else torch.ones_like(gallery.places, dtype=torch.bool)
            )
            ranked = gallery.subset(keep)
        scores, top = topk_search(
            query.embeddings.float(), ranked.embeddings.float(), k=min(options.ranking_k, len(ranked.paths))
        )
        report.directions[direction] = DirectionResult(
            query.cpu(), ranked.cpu(), gallery.cpu(), scores.cpu(), top.cpu()
        )

    @staticmethod
    def _groups(query: CollectedSet) -> tuple[torch.Tensor, torch.Tensor]:
        """One group per place, or per place and altitude where the set has several altitudes."""
        chosen = query.altitudes
        per_altitude = len({a for a in chosen if a is not None}) > 1
        alt = torch.tensor([a or 0 for a in chosen], device=query.places.device) if per_altitude else None
        return query_groups(query.places, alt)


def _is_rank_zero() -> bool:
    return not _distributed() or torch.distributed.get_rank() == 0
