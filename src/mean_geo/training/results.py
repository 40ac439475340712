"""Write what a run learned into its run directory (metrics.json, predictions, plots) and send the
same figures and the predictions table to the loggers; the metrics table goes to the run's log."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from mean_geo.data.datamodule import CrossViewDataModule
from mean_geo.files import atomic
from mean_geo.files.atomic import atomic_path
from mean_geo.retrieval.evaluate import METRIC_KEYS, matched_gallery
from mean_geo.retrieval.search import topk_search
from mean_geo.training import plots
from mean_geo.training.lit_module import MEANLitModule
from mean_geo.training.media import log_images, log_table

log = logging.getLogger(__name__)
PREDICTION_COLUMNS = ["query", "location", "correct_at_1", "top_locations", "top_scores", "top1_image"]


def metrics_table(metrics: dict[str, float], stage: str = "test") -> Table:
    table = Table(title=f"{stage} retrieval (%)")
    table.add_column("direction")
    for key in METRIC_KEYS:
        table.add_column(key, justify="right")
    for direction in ("d2s", "s2d"):
        row = [metrics.get(f"{stage}/{direction}/{k}") for k in METRIC_KEYS]
        if any(v is not None for v in row):
            label = "drone → satellite" if direction == "d2s" else "satellite → drone"
            table.add_row(label, *("-" if v is None else f"{v:.2f}" for v in row))
    return table


def render(table: Table) -> str:
    """A rich table as plain text, for the log (console and ``<task>.log`` alike)."""
    buffer = io.StringIO()
    Console(file=buffer, width=100, color_system=None).print(table)
    return buffer.getvalue().rstrip()


@dataclass
class DirectionView:
    """One direction of the last evaluation: embeddings with their image paths."""

    q_paths: list[Path]
    qid: torch.Tensor
    q: torch.Tensor
    g_paths: list[Path]  # the gallery the metrics were computed on
    gid: torch.Tensor
    g: torch.Tensor
    full_gallery: tuple[torch.Tensor, torch.Tensor]  # (embeddings, ids) before dropping unmatched places


def eval_views(lit: MEANLitModule, dm: CrossViewDataModule, stage: str = "test") -> dict[str, DirectionView]:
    emb = lit.last_embeddings
    views = {}
    for direction in dict.fromkeys(d for d, _ in dm.eval_sets):
        if (direction, "query") not in emb or (direction, "gallery") not in emb:
            continue
        q, qid, qidx = emb[(direction, "query")]
        g, gid, gidx = emb[(direction, "gallery")]
        full = (g, gid)
        if lit.drop_unmatched_gallery:  # the gallery the metrics were computed on
            keep = matched_gallery(qid, gid)
            g, gid, gidx = g[keep], gid[keep], gidx[keep]
        query_files, gallery_files = (dm.eval_image_paths(stage, direction, r) for r in ("query", "gallery"))
        q_paths = [query_files[i] for i in qidx.tolist()]
        g_paths = [gallery_files[i] for i in gidx.tolist()]
        views[direction] = DirectionView(q_paths, qid, q, g_paths, gid, g, full)
    return views


def prediction_rows(view: DirectionView, k: int = 5) -> list[list]:
    """One row per query: its place, the top-k places retrieved with scores, hit@1 (for failure
    analysis: ``notebooks/02_results.ipynb`` reads the CSV)."""
    scores, top = topk_search(view.q.float(), view.g.float(), k=min(k, len(view.g_paths)))
    rows = []
    for i, qpath in enumerate(view.q_paths):
        ids = [int(view.gid[j]) for j in top[i].tolist()]
        rows.append(
            [
                str(qpath),
                int(view.qid[i]),
                int(ids[0] == int(view.qid[i])),
                " ".join(map(str, ids)),
                " ".join(f"{v:.4f}" for v in scores[i].tolist()),
                str(view.g_paths[top[i, 0]]),
            ]
        )
    return rows


def write_predictions(path: Path, rows: list[list]) -> None:
    with atomic_path(path) as partial, partial.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(PREDICTION_COLUMNS)
        out.writerows(rows)


def make_figures(
    views: dict[str, DirectionView], plot_dir: Path, drop_unmatched_gallery: bool
) -> tuple[dict[str, Path], dict[str, list[float]]]:
    """Top-5 strips per direction, the recall@K curves and the embedding map; returns
    ``({figure name: png}, recall curves)``."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    for direction, v in views.items():
        figures[f"{direction}_top5"] = plot_dir / f"{direction}_top5.png"
        plots.retrieval_strips(v.q_paths, v.qid, v.q, v.g_paths, v.gid, v.g, figures[f"{direction}_top5"])
    if not views:
        return figures, {}
    curves = {d: (v.q, v.qid, *v.full_gallery) for d, v in views.items()}
    figures["recall_at_k"] = plot_dir / "recall_at_k.png"
    values = plots.recall_curve(curves, figures["recall_at_k"], drop_unmatched_gallery=drop_unmatched_gallery)
    if "d2s" in views:
        path = plot_dir / "embeddings_2d.png"
        plots.embedding_map(*curves["d2s"], path)
        if path.is_file():
            figures["embeddings_2d"] = path
    return figures, values


def write_results(
    out_dir: Path,
    lit: MEANLitModule,
    dm: CrossViewDataModule,
    extra: dict | None = None,
    make_plots: bool = True,
    stage: str = "test",
    loggers: list | None = None,
    step: int = 0,
) -> dict:
    """metrics.json, predictions_<direction>.csv (+ plots) from the module's last evaluation, and
    the figures and predictions tables to ``loggers``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "metrics": dict(lit.last_metrics),
        "protocol": {
            "drop_unmatched_gallery": lit.drop_unmatched_gallery,
            "note": "true = MEAN/Sample4Geo convention (gallery places without a query are ignored)",
            "flip_tta": lit.flip_tta,
            "multi_query": lit.multi_query,
        },
        **(extra or {}),
    }
    views = eval_views(lit, dm, stage)
    for direction, view in views.items():
        rows = prediction_rows(view)
        write_predictions(out_dir / f"predictions_{direction}.csv", rows)
        log_table(loggers or [], f"{stage}/predictions_{direction}", PREDICTION_COLUMNS, rows, step)
    if make_plots:
        figures, payload["recall_curve"] = make_figures(views, out_dir / "plots", lit.drop_unmatched_gallery)
        log_images(loggers or [], {f"{stage}/{name}": path for name, path in figures.items()}, step)
    atomic.write_text(out_dir / "metrics.json", json.dumps(payload, indent=2) + "\n")
    log.info("\n%s", render(metrics_table(lit.last_metrics, stage)))
    return payload


class ResultsWriter(L.Callback):
    """Writes metrics.json and plots when testing ends, and the figures of every validation, on
    global rank 0 of whatever strategy runs (one process, DDP, ddp_spawn, SLURM alike)."""

    def __init__(self, out_dir: str | Path, make_plots: bool = True, extra: dict | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.make_plots = make_plots
        self.extra = dict(extra or {})
        self.val_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_metrics = {k: float(v) for k, v in pl_module.last_metrics.items() if k.startswith("val/")}
        if trainer.sanity_checking or not trainer.is_global_zero or not self.val_metrics:
            return
        log.info("\n%s", render(metrics_table(self.val_metrics, "val")))
        if self.make_plots:
            plot_dir = self.out_dir / "plots" / "val" / f"epoch_{trainer.current_epoch:03d}"
            figures, _ = make_figures(
                eval_views(pl_module, trainer.datamodule, "val"), plot_dir, pl_module.drop_unmatched_gallery
            )
            log_images(trainer.loggers, {f"val/{k}": v for k, v in figures.items()}, trainer.global_step)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        extra = dict(self.extra)
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "best_model_path", ""):
            extra["best_checkpoint"] = ckpt.best_model_path
        if self.val_metrics:
            extra["val"] = self.val_metrics
        write_results(
            self.out_dir,
            pl_module,
            trainer.datamodule,
            extra=extra,
            make_plots=self.make_plots,
            loggers=trainer.loggers,
            step=trainer.global_step,
        )


def read_metrics(out_dir: str | Path) -> dict[str, float]:
    """Test (and last validation) metrics of a run directory, as written by :class:`ResultsWriter`."""
    payload = json.loads((Path(out_dir) / "metrics.json").read_text())
    return {**payload.get("val", {}), **payload["metrics"]}
