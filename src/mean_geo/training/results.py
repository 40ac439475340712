"""Write what an evaluation found into the run directory (metrics.json, predictions, plots) and send
the same figures and the predictions table to the loggers; the metrics table goes to the run's log.

Everything written comes from the evaluator's report (:class:`~mean_geo.retrieval.evaluator.EvalReport`)
and the dataset's description and protocol handed over at construction: nothing here reads the
datamodule, reapplies a convention or searches again.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from mean_geo.reporting.browser import BrowserDirection, write_browser
from mean_geo.reporting.run_file import NAME as RUN_FILE
from mean_geo.reporting.run_file import write_run_file
from mean_geo.retrieval.evaluate import METRIC_KEYS
from mean_geo.retrieval.evaluator import DirectionResult, EvalReport
from mean_geo.retrieval.options import DatasetDescription, DatasetProtocol
from mean_geo.retrieval.protocol import SplitLists, protocol_fingerprint
from mean_geo.training import plots
from mean_geo.training.loggers import log_images, log_table
from mean_geo.training.refined_eval import CONVENTION as REFINED
from mean_geo.training.refined_eval import RefineRequest, refine_direction, write_refined_rows
from mean_geo.utils.atomic import atomic_path
from mean_geo.utils.output import writable_folder

log = logging.getLogger(__name__)
PREDICTION_COLUMNS = ["query", "location", "correct_at_1", "top_locations", "top_scores", "top1_image"]


def metrics_table(metrics: dict[str, float], conventions: list[str], stage: str = "test") -> Table:
    """One row per direction and convention (``d2s``, ``d2s_rerank``, ``d2s_multi_mean``, …), with
    the metres on the ground where the evaluation had positions."""
    names = list(conventions)
    extra = [k for k in ("Dis@1", "Acc@50m") if any(f"{stage}/{n}/{k}" in metrics for n in names)]
    table = Table(title=f"{stage} retrieval (%)")
    table.add_column("convention")
    for key in (*METRIC_KEYS, *extra):
        table.add_column("Dis@1 (m)" if key == "Dis@1" else key, justify="right")
    labels = {"d2s": "drone → satellite", "s2d": "satellite → drone"}
    for name in names:
        row = [metrics.get(f"{stage}/{name}/{k}") for k in (*METRIC_KEYS, *extra)]
        if any(v is not None for v in row[: len(METRIC_KEYS)]):
            table.add_row(labels.get(name, name), *("-" if v is None else f"{v:.2f}" for v in row))
    return table


CORRUPTION_COLUMNS = ["corruption", "severity", "R@1", "AP", "drop_R@1", "drop_AP"]


def corruption_rows(
    found: dict[tuple[str, int], dict[str, float]], metrics: dict[str, float], stage: str
) -> list[dict]:
    """One row per (corruption, severity): R@1 and AP of the corrupted D→S queries and their drop
    from the clean queries (percentage points)."""
    clean = {key: metrics[f"{stage}/d2s/{key}"] for key in ("R@1", "AP")}
    return [
        {
            "corruption": name,
            "severity": severity,
            **{key: values[key] for key in ("R@1", "AP")},
            **{f"drop_{key}": clean[key] - values[key] for key in ("R@1", "AP")},
        }
        for (name, severity), values in found.items()
    ]


def write_corruptions(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as partial, partial.open("w", newline="") as fh:
        out = csv.DictWriter(fh, CORRUPTION_COLUMNS)
        out.writeheader()
        out.writerows(rows)


def corruption_table(rows: list[dict]) -> Table:
    """D→S R@1 / AP per corruption (rows) and severity (columns), then the mean drop."""
    severities = sorted({r["severity"] for r in rows})
    table = Table(title="D→S under corrupted drone queries: R@1 / AP (%)")
    table.add_column("corruption")
    for severity in severities:
        table.add_column(f"severity {severity}", justify="right")
    table.add_column("mean drop", justify="right")
    for name in dict.fromkeys(r["corruption"] for r in rows):
        mine = {r["severity"]: r for r in rows if r["corruption"] == name}
        cells = [f"{mine[s]['R@1']:.1f} / {mine[s]['AP']:.1f}" if s in mine else "-" for s in severities]
        drop = [sum(r[f"drop_{k}"] for r in mine.values()) / len(mine) for k in ("R@1", "AP")]
        table.add_row(name, *cells, f"{drop[0]:.1f} / {drop[1]:.1f}")
    return table


def render(table: Table) -> str:
    """A rich table as plain text, for the log (console and ``<task>.log`` alike)."""
    buffer = io.StringIO()
    Console(file=buffer, width=100, color_system=None).print(table)
    return buffer.getvalue().rstrip()


def prediction_rows(direction: DirectionResult, k: int = 5) -> list[list]:
    """One row per query: its place, the top-k places retrieved with scores, hit@1 (for failure
    analysis: ``notebooks/02_results.ipynb`` reads the CSV)."""
    query, gallery = direction.query, direction.gallery
    scores, top = direction.scores[:, :k], direction.top[:, :k]
    rows = []
    for i, qpath in enumerate(query.paths):
        ids = [int(gallery.places[j]) for j in top[i].tolist()]
        rows.append(
            [
                str(qpath),
                int(query.places[i]),
                int(ids[0] == int(query.places[i])),
                " ".join(map(str, ids)),
                " ".join(f"{v:.4f}" for v in scores[i].tolist()),
                str(gallery.paths[top[i, 0]]),
            ]
        )
    return rows


def _latlon_rows(latlon: torch.Tensor | None) -> list[tuple[float, float]] | None:
    return None if latlon is None else [(float(a), float(b)) for a, b in latlon.tolist()]


def browser_direction(name: str, direction: DirectionResult, refined: list | None = None) -> BrowserDirection:
    """What the error browser shows of one direction (with ``refined``: per query, the gallery item
    and the point in it where refinement placed the photo, or None)."""
    query, gallery = direction.query, direction.gallery
    both = query.latlon is not None and gallery.latlon is not None
    return BrowserDirection(
        name=name,
        query_paths=query.paths,
        query_places=query.locations,
        query_altitudes=query.altitudes,
        gallery_paths=gallery.paths,
        gallery_places=gallery.locations,
        top=direction.top[:, :5].tolist(),
        scores=direction.scores[:, :5].tolist(),
        query_latlon=_latlon_rows(query.latlon) if both else None,
        gallery_latlon=_latlon_rows(gallery.latlon) if both else None,
        refined=refined,
        gallery_footprints=gallery.footprints,
    )


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def refined_metrics(
    out_dir: Path, direction: DirectionResult, protocol: DatasetProtocol, refine: RefineRequest, stage: str
) -> tuple[dict[str, float], list[dict]]:
    """Refine the D->S queries; their answers to refined_d2s.csv, and the metres where the dataset
    knows each photo's ground point (else the log says why not)."""
    if protocol.tile_to_ground is None:
        log.info("refinement: %s", protocol.refinement_note)
    metrics, rows = refine_direction(direction, protocol.tile_to_ground, refine, refine.build(), stage)
    write_refined_rows(out_dir / "refined_d2s.csv", rows)
    shown = sum(r["refined"] for r in rows)
    log.info("refinement: %d of %d queries refined (refined_d2s.csv)", shown, len(rows))
    return metrics, rows


def evaluation_protocol(
    report: EvalReport,
    dataset: DatasetDescription,
    conventions: list[str],
    refine: RefineRequest | None = None,
) -> dict:
    """The protocol fingerprint of an evaluation (:mod:`mean_geo.retrieval.protocol`)."""
    root = Path(dataset.root)
    splits = {
        name: SplitLists(
            [_relative(p, root) for p in d.query.paths],
            [_relative(p, root) for p in d.full_gallery.paths],
            len(d.gallery.paths),
        )
        for name, d in report.directions.items()
    }
    options = report.options
    return protocol_fingerprint(
        dataset=dataset.name,
        layout=dataset.layout,
        synthetic=dataset.synthetic,
        altitude=list(dataset.altitudes) if dataset.altitudes is not None else None,
        image_size=dataset.image_size,
        splits=splits,
        conventions=conventions,
        drop_unmatched_gallery=bool(options.drop_unmatched_gallery),
        flip_tta=options.flip_tta,
        multi_query=options.multi_query,
        rerank=asdict(options.rerank) if options.rerank is not None else None,
        corruptions=sorted({name for name, _ in report.corruptions}),
        severities=sorted({severity for _, severity in report.corruptions}),
        position_metrics=options.position_metrics,
        refine=refine.fingerprint() if refine is not None else None,
    )


def write_predictions(path: Path, rows: list[list]) -> None:
    with atomic_path(path) as partial, partial.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(PREDICTION_COLUMNS)
        out.writerows(rows)


def make_figures(report: EvalReport, plot_dir: Path) -> dict[str, Path]:
    """Top-5 strips per direction, the recall@K curves of every convention, the distance-error
    histogram (when positions are known) and the embedding map; returns ``{figure name: png}``."""
    writable_folder(plot_dir, "plots")
    figures: dict[str, Path] = {}
    for name, d in report.directions.items():
        q, g = d.query, d.gallery
        figures[f"{name}_top5"] = plot_dir / f"{name}_top5.png"
        plots.retrieval_strips(
            q.paths, q.places, q.embeddings, g.paths, g.places, g.embeddings, figures[f"{name}_top5"]
        )
    if report.curves:
        figures["recall_at_k"] = plot_dir / "recall_at_k.png"
        plots.recall_curve(report.curves, figures["recall_at_k"])
    if report.top1_errors_m:
        figures["distance_errors"] = plot_dir / "distance_errors.png"
        plots.error_histogram(report.top1_errors_m, figures["distance_errors"])
    if "d2s" in report.directions:
        d = report.directions["d2s"]
        path = plot_dir / "embeddings_2d.png"
        plots.embedding_map(d.query.embeddings, d.query.places, d.full_gallery.embeddings, d.full_gallery.places, path)
        if path.is_file():
            figures["embeddings_2d"] = path
    return figures


def write_results(
    out_dir: Path,
    report: EvalReport,
    dataset: DatasetDescription,
    protocol: DatasetProtocol,
    extra: dict | None = None,
    make_plots: bool = True,
    loggers: list | None = None,
    step: int = 0,
    refine: RefineRequest | None = None,
) -> dict:
    """metrics.json, predictions_<direction>.csv (+ plots) of an evaluation's report, and the figures
    and predictions tables to ``loggers``; with ``refine``, the D->S queries refined
    (:mod:`mean_geo.training.refined_eval`)."""
    out_dir = writable_folder(out_dir, "paths.output_dir")
    stage = report.stage
    payload = {"metrics": dict(report.metrics), "protocol": report.options.record(), **(extra or {})}
    conventions = list(report.conventions)
    if report.corruptions:
        payload["corruptions"] = corruption_rows(report.corruptions, report.metrics, stage)
        write_corruptions(out_dir / "corruptions.csv", payload["corruptions"])
        log.info("\n%s", render(corruption_table(payload["corruptions"])))
    marks: dict[str, list] = {}
    if refine is not None and "d2s" in report.directions:
        metrics, rows = refined_metrics(out_dir, report.directions["d2s"], protocol, refine, stage)
        payload["metrics"].update(metrics)
        payload["protocol"]["refine"] = refine.fingerprint()
        marks["d2s"] = [r.get("_mark") for r in rows]
        if metrics:
            conventions.append(REFINED)
    payload["protocol"]["fingerprint"] = evaluation_protocol(report, dataset, conventions, refine)
    for name, direction in report.directions.items():
        rows = prediction_rows(direction)
        write_predictions(out_dir / f"predictions_{name}.csv", rows)
        log_table(loggers or [], f"{stage}/predictions_{name}", PREDICTION_COLUMNS, rows, step)
    payload["recall_curve"] = dict(report.curves)
    if make_plots:
        figures = make_figures(report, out_dir / "plots")
        if report.corruptions:
            figures["corruptions"] = out_dir / "plots" / "corruptions.png"
            heat = {}
            for (name, severity), values in report.corruptions.items():
                heat.setdefault(name, {})[severity] = values["R@1"]
            plots.corruption_heatmap(heat, report.metrics[f"{stage}/d2s/R@1"], figures["corruptions"])
        log_images(loggers or [], {f"{stage}/{name}": path for name, path in figures.items()}, step)
        write_browser(
            out_dir / "plots" / "browser.html",
            [browser_direction(name, d, marks.get(name)) for name, d in report.directions.items()],
            title=f"{stage} evaluation of {out_dir.name}",
            subtitle=browser_subtitle(payload),
        )
    write_run_file(out_dir / RUN_FILE, payload)
    log.info("\n%s", render(metrics_table(payload["metrics"], conventions, stage)))
    return payload


def browser_subtitle(payload: dict) -> str:
    """The run and protocol in one line, for the browser's heading."""
    fp = payload["protocol"].get("fingerprint", {})
    run = payload.get("run", {})
    parts = [
        f"{run.get('method') or run.get('architecture') or ''} {run.get('backbone') or ''}".strip(),
        f"{fp.get('dataset')}{' (synthetic)' if fp.get('synthetic') else ''}",
        f"altitude {','.join(map(str, fp['altitude']))}" if fp.get("altitude") else "",
        f"{fp.get('image_size')} px",
        "unmatched gallery places dropped" if fp.get("drop_unmatched_gallery") else "full gallery",
        "flip-TTA" if fp.get("flip_tta") else "",
        f"protocol {fp.get('id')}",
    ]
    return " · ".join(p for p in parts if p)


class ResultsWriter(L.Callback):
    """Writes metrics.json and plots when testing ends, and the figures of every validation, on
    global rank 0 of whatever strategy runs (one process, DDP, ddp_spawn, SLURM alike).

    Args:
        out_dir: the run directory.
        dataset: the evaluated data's description (the protocol fingerprint).
        protocol: the dataset's protocol (refined metres, where it knows its tiles' geometry).
        make_plots: draw figures and the error browser.
        extra: more sections for metrics.json (the run's summary, …).
        refine: refine the D->S queries of the test (``eval.refine``).
    """

    def __init__(
        self,
        out_dir: str | Path,
        dataset: DatasetDescription,
        protocol: DatasetProtocol,
        make_plots: bool = True,
        extra: dict | None = None,
        refine: RefineRequest | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.dataset = dataset
        self.protocol = protocol
        self.make_plots = make_plots
        self.extra = dict(extra or {})
        self.refine = refine
        self.val_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        report: EvalReport | None = getattr(pl_module, "last_report", None)
        if trainer.sanity_checking or report is None or report.stage != "val":
            return
        self.val_metrics = {k: float(v) for k, v in report.metrics.items()}
        if not trainer.is_global_zero or not self.val_metrics:
            return
        log.info("\n%s", render(metrics_table(self.val_metrics, report.conventions, "val")))
        if self.make_plots:
            plot_dir = self.out_dir / "plots" / "val" / f"epoch_{trainer.current_epoch:03d}"
            figures = make_figures(report, plot_dir)
            log_images(trainer.loggers, {f"val/{k}": v for k, v in figures.items()}, trainer.global_step)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._write_test_results(trainer, pl_module)
        # every rank of strategy=ddp runs the entry point on, and reads metrics.json next: none may
        # pass before rank 0 has written it (Lightning puts no barrier after the evaluation loop)
        trainer.strategy.barrier("metrics.json written")

    def _write_test_results(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        extra = dict(self.extra)
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "best_model_path", ""):
            extra["best_checkpoint"] = ckpt.best_model_path
        if self.val_metrics:
            extra["val"] = self.val_metrics
        write_results(
            self.out_dir,
            pl_module.last_report,
            self.dataset,
            self.protocol,
            extra=extra,
            make_plots=self.make_plots,
            loggers=trainer.loggers,
            step=trainer.global_step,
            refine=self.refine,
        )
