"""Write what a run learned into its run directory (metrics.json, predictions, plots) and send the
same figures and the predictions table to the loggers; the metrics table goes to the run's log."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from mean_geo.data.datamodule import DATAMODULES, CrossViewDataModule
from mean_geo.data.layouts import ImageRecord
from mean_geo.reporting.browser import BrowserDirection, write_browser
from mean_geo.retrieval.evaluate import METRIC_KEYS, matched_gallery
from mean_geo.retrieval.protocol import SplitLists, protocol_fingerprint
from mean_geo.retrieval.search import topk_search
from mean_geo.training import plots
from mean_geo.training.lit_module import MEANLitModule
from mean_geo.training.media import log_images, log_table
from mean_geo.training.refined_eval import RefineRequest, refine_direction, write_refined_rows
from mean_geo.utils import atomic
from mean_geo.utils.atomic import atomic_path
from mean_geo.utils.output import writable_folder

log = logging.getLogger(__name__)
PREDICTION_COLUMNS = ["query", "location", "correct_at_1", "top_locations", "top_scores", "top1_image"]


def metrics_table(metrics: dict[str, float], stage: str = "test") -> Table:
    """One row per direction and convention (``d2s``, ``d2s_rerank``, ``d2s_multi_mean``, …), with
    the metres on the ground where the evaluation had positions."""
    names = list(dict.fromkeys(k.split("/")[1] for k in metrics if k.startswith(f"{stage}/") and k.count("/") == 2))
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


@dataclass
class DirectionView:
    """One direction of the last evaluation: embeddings with their images, places and positions."""

    q_records: list[ImageRecord]
    qid: torch.Tensor
    q: torch.Tensor
    g_records: list[ImageRecord]  # the gallery the metrics were computed on
    gid: torch.Tensor
    g: torch.Tensor
    full_gallery: tuple[torch.Tensor, torch.Tensor]  # (embeddings, ids) before dropping unmatched places
    all_gallery: list[ImageRecord]  # every gallery image of the set, in dataset order
    q_latlon: torch.Tensor | None = None  # (Q, 2) degrees, NaN rows where unknown
    g_latlon: torch.Tensor | None = None

    @property
    def q_paths(self) -> list[Path]:
        return [r.path for r in self.q_records]

    @property
    def g_paths(self) -> list[Path]:
        return [r.path for r in self.g_records]


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
        query_records, gallery_records = (dm.eval_records(stage, direction, r) for r in ("query", "gallery"))
        positions = [dm.eval_coordinates(stage, direction, r) for r in ("query", "gallery")]
        q_latlon, g_latlon = (
            (positions[0][qidx], positions[1][gidx]) if all(p is not None for p in positions) else (None, None)
        )
        views[direction] = DirectionView(
            [query_records[i] for i in qidx.tolist()],
            qid,
            q,
            [gallery_records[i] for i in gidx.tolist()],
            gid,
            g,
            full,
            gallery_records,
            q_latlon,
            g_latlon,
        )
    return views


def ranking(view: DirectionView, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and gallery indices of every query's top-k (single images, the metrics' gallery)."""
    return topk_search(view.q.float(), view.g.float(), k=min(k, len(view.g_records)))


def prediction_rows(
    view: DirectionView, k: int = 5, ranked: tuple[torch.Tensor, torch.Tensor] | None = None
) -> list[list]:
    """One row per query: its place, the top-k places retrieved with scores, hit@1 (for failure
    analysis: ``notebooks/02_results.ipynb`` reads the CSV)."""
    scores, top = ranked if ranked is not None else ranking(view, k)
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


def _latlon_rows(latlon: torch.Tensor | None) -> list[tuple[float, float]] | None:
    return None if latlon is None else [(float(a), float(b)) for a, b in latlon.tolist()]


def browser_direction(
    name: str, view: DirectionView, ranked: tuple[torch.Tensor, torch.Tensor], refined: list | None = None
) -> BrowserDirection:
    """What the error browser shows of one direction (with ``refined``: per query, the gallery item
    and the point in it where refinement placed the photo, or None)."""
    scores, top = ranked
    return BrowserDirection(
        name=name,
        query_paths=view.q_paths,
        query_places=[r.location for r in view.q_records],
        query_altitudes=[r.altitude for r in view.q_records],
        gallery_paths=view.g_paths,
        gallery_places=[r.location for r in view.g_records],
        top=top.tolist(),
        scores=scores.tolist(),
        query_latlon=_latlon_rows(view.q_latlon),
        gallery_latlon=_latlon_rows(view.g_latlon),
        refined=refined,
    )


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def refined_metrics(
    out_dir: Path, view: DirectionView, dm: CrossViewDataModule, refine: RefineRequest, stage: str
) -> tuple[dict[str, float], list[dict]]:
    """Refine the D->S queries; their answers to refined_d2s.csv, and the metres where the dataset
    knows each photo's ground point (else the log says why not)."""
    ground = dm.refinement_ground(stage)
    if isinstance(ground, str):
        log.info("refinement: %s", ground)
        ground = None
    metrics, rows = refine_direction(view, ground, refine, refine.build(), stage)
    write_refined_rows(out_dir / "refined_d2s.csv", rows)
    shown = sum(r["refined"] for r in rows)
    log.info("refinement: %d of %d queries refined (refined_d2s.csv)", shown, len(rows))
    return metrics, rows


def evaluation_protocol(
    lit: MEANLitModule,
    dm: CrossViewDataModule,
    views: dict[str, DirectionView],
    stage: str,
    metrics: dict[str, float] | None = None,
    refine: RefineRequest | None = None,
) -> dict:
    """The protocol fingerprint of the last evaluation (:mod:`mean_geo.retrieval.protocol`)."""
    root = Path(dm.root)
    splits = {
        direction: SplitLists(
            [_relative(p, root) for p in view.q_paths],
            [_relative(r.path, root) for r in view.all_gallery],
            len(view.g_records),
        )
        for direction, view in views.items()
    }
    conventions = list(
        dict.fromkeys(
            k.split("/")[1] for k in (metrics or lit.last_metrics) if k.startswith(f"{stage}/") and k.count("/") == 2
        )
    )
    altitudes = getattr(dm, "altitudes", None)
    return protocol_fingerprint(
        dataset=layout_name(dm),
        layout=dm.layout or type(dm).__name__,
        synthetic=bool(dm.synthetic),
        altitude=list(altitudes) if altitudes is not None else None,
        image_size=dm.image_size,
        splits=splits,
        conventions=conventions,
        drop_unmatched_gallery=lit.drop_unmatched_gallery,
        flip_tta=lit.flip_tta,
        multi_query=lit.multi_query,
        rerank=asdict(lit.rerank) if lit.rerank is not None else None,
        corruptions=sorted({name for name, _ in lit.last_corruptions}),
        severities=sorted({severity for _, severity in lit.last_corruptions}),
        position_metrics=getattr(dm, "position_metrics", None),
        refine=refine.fingerprint() if refine is not None else None,
    )


def write_predictions(path: Path, rows: list[list]) -> None:
    with atomic_path(path) as partial, partial.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(PREDICTION_COLUMNS)
        out.writerows(rows)


def make_figures(
    views: dict[str, DirectionView],
    plot_dir: Path,
    curves: dict[str, list[float]] | None = None,
    top1_errors_m: dict[str, torch.Tensor] | None = None,
) -> dict[str, Path]:
    """Top-5 strips per direction, the recall@K curves of every convention, the distance-error
    histogram (when positions are known) and the embedding map; returns ``{figure name: png}``."""
    writable_folder(plot_dir, "plots")
    figures: dict[str, Path] = {}
    for direction, v in views.items():
        figures[f"{direction}_top5"] = plot_dir / f"{direction}_top5.png"
        plots.retrieval_strips(v.q_paths, v.qid, v.q, v.g_paths, v.gid, v.g, figures[f"{direction}_top5"])
    if curves:
        figures["recall_at_k"] = plot_dir / "recall_at_k.png"
        plots.recall_curve(curves, figures["recall_at_k"])
    if top1_errors_m:
        figures["distance_errors"] = plot_dir / "distance_errors.png"
        plots.error_histogram(top1_errors_m, figures["distance_errors"])
    if "d2s" in views:
        path = plot_dir / "embeddings_2d.png"
        plots.embedding_map(views["d2s"].q, views["d2s"].qid, *views["d2s"].full_gallery, path)
        if path.is_file():
            figures["embeddings_2d"] = path
    return figures


def write_results(
    out_dir: Path,
    lit: MEANLitModule,
    dm: CrossViewDataModule,
    extra: dict | None = None,
    make_plots: bool = True,
    stage: str = "test",
    loggers: list | None = None,
    step: int = 0,
    refine: RefineRequest | None = None,
) -> dict:
    """metrics.json, predictions_<direction>.csv (+ plots) from the module's last evaluation, and
    the figures and predictions tables to ``loggers``; with ``refine``, the D->S queries refined
    (:mod:`mean_geo.training.refined_eval`)."""
    out_dir = writable_folder(out_dir, "paths.output_dir")
    payload = {
        "metrics": dict(lit.last_metrics),
        "protocol": {
            "drop_unmatched_gallery": lit.drop_unmatched_gallery,
            "note": "true = MEAN/Sample4Geo convention (gallery places without a query are ignored)",
            "flip_tta": lit.flip_tta,
            "multi_query": lit.multi_query,
            "rerank": asdict(lit.rerank) if lit.rerank is not None else None,
            "corruptions": sorted({name for name, _ in lit.last_corruptions}),
            "severities": sorted({severity for _, severity in lit.last_corruptions}),
        },
        **(extra or {}),
    }
    if lit.last_corruptions:
        payload["corruptions"] = corruption_rows(lit.last_corruptions, lit.last_metrics, stage)
        write_corruptions(out_dir / "corruptions.csv", payload["corruptions"])
        log.info("\n%s", render(corruption_table(payload["corruptions"])))
    views = eval_views(lit, dm, stage)
    marks: dict[str, list] = {}
    if refine is not None and "d2s" in views:
        metrics, rows = refined_metrics(out_dir, views["d2s"], dm, refine, stage)
        payload["metrics"].update(metrics)
        payload["protocol"]["refine"] = refine.fingerprint()
        marks["d2s"] = [r.get("_mark") for r in rows]
    payload["protocol"]["fingerprint"] = evaluation_protocol(lit, dm, views, stage, payload["metrics"], refine)
    ranked = {direction: ranking(view) for direction, view in views.items()}
    for direction, view in views.items():
        rows = prediction_rows(view, ranked=ranked[direction])
        write_predictions(out_dir / f"predictions_{direction}.csv", rows)
        log_table(loggers or [], f"{stage}/predictions_{direction}", PREDICTION_COLUMNS, rows, step)
    payload["recall_curve"] = dict(lit.last_curves)
    if make_plots:
        figures = make_figures(views, out_dir / "plots", lit.last_curves, lit.last_top1_errors_m)
        if lit.last_corruptions:
            figures["corruptions"] = out_dir / "plots" / "corruptions.png"
            heat = {}
            for (name, severity), values in lit.last_corruptions.items():
                heat.setdefault(name, {})[severity] = values["R@1"]
            plots.corruption_heatmap(heat, lit.last_metrics[f"{stage}/d2s/R@1"], figures["corruptions"])
        log_images(loggers or [], {f"{stage}/{name}": path for name, path in figures.items()}, step)
        write_browser(
            out_dir / "plots" / "browser.html",
            [browser_direction(name, views[name], ranked[name], marks.get(name)) for name in views],
            title=f"{stage} evaluation of {out_dir.name}",
            subtitle=browser_subtitle(payload),
        )
    atomic.write_text(out_dir / "metrics.json", json.dumps(payload, indent=2) + "\n")
    log.info("\n%s", render(metrics_table(lit.last_metrics, stage)))
    return payload


def layout_name(dm: CrossViewDataModule) -> str:
    """The name ``dataset.name`` selects ``dm``'s class by (a plugin's layout included)."""
    return next((name for name, cls in DATAMODULES.items() if cls is type(dm)), dm.layout or type(dm).__name__)


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
    global rank 0 of whatever strategy runs (one process, DDP, ddp_spawn, SLURM alike)."""

    def __init__(
        self,
        out_dir: str | Path,
        make_plots: bool = True,
        extra: dict | None = None,
        refine: RefineRequest | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.make_plots = make_plots
        self.extra = dict(extra or {})
        self.refine = refine
        self.val_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_metrics = {k: float(v) for k, v in pl_module.last_metrics.items() if k.startswith("val/")}
        if trainer.sanity_checking or not trainer.is_global_zero or not self.val_metrics:
            return
        log.info("\n%s", render(metrics_table(self.val_metrics, "val")))
        if self.make_plots:
            plot_dir = self.out_dir / "plots" / "val" / f"epoch_{trainer.current_epoch:03d}"
            figures = make_figures(
                eval_views(pl_module, trainer.datamodule, "val"),
                plot_dir,
                pl_module.last_curves,
                pl_module.last_top1_errors_m,
            )
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
            pl_module,
            trainer.datamodule,
            extra=extra,
            make_plots=self.make_plots,
            loggers=trainer.loggers,
            step=trainer.global_step,
            refine=self.refine,
        )


def read_metrics(out_dir: str | Path) -> dict[str, float]:
    """Test (and last validation) metrics of a run directory, as written by :class:`ResultsWriter`."""
    payload = json.loads((Path(out_dir) / "metrics.json").read_text())
    return {**payload.get("val", {}), **payload["metrics"]}
