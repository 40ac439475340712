"""Write what a run learned into its run directory: metrics.json, plots, and a console table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from mean_geo import plots
from mean_geo.data.datamodule import CrossViewDataModule
from mean_geo.lit_module import MEANLitModule
from mean_geo.retrieval.evaluate import METRIC_KEYS


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


def write_predictions(path: Path, query_paths, query_ids, query_emb, gallery_paths, gallery_ids, gallery_emb, k=5):
    """One CSV row per query: its place, the top-k places retrieved with scores, hit@1 (for failure
    analysis: ``notebooks/02_results.ipynb`` reads it)."""
    scores, top = (query_emb.float() @ gallery_emb.float().T).topk(min(k, len(gallery_paths)), dim=1)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["query", "location", "correct_at_1", "top_locations", "top_scores", "top1_image"])
        for i, qpath in enumerate(query_paths):
            ids = [int(gallery_ids[j]) for j in top[i].tolist()]
            out.writerow(
                [
                    str(qpath),
                    int(query_ids[i]),
                    int(ids[0] == int(query_ids[i])),
                    " ".join(map(str, ids)),
                    " ".join(f"{v:.4f}" for v in scores[i].tolist()),
                    str(gallery_paths[top[i, 0]]),
                ]
            )


def write_results(
    out_dir: Path,
    lit: MEANLitModule,
    dm: CrossViewDataModule,
    extra: dict | None = None,
    make_plots: bool = True,
    stage: str = "test",
) -> dict:
    """metrics.json, predictions_<direction>.csv (+ plots) from the module's last evaluation."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "metrics": dict(lit.last_metrics),
        "protocol": {
            "drop_unmatched_gallery": lit.drop_unmatched_gallery,
            "note": "true = MEAN/Sample4Geo convention (gallery places without a query are ignored)",
        },
        **(extra or {}),
    }
    emb, sets = lit.last_embeddings, dm.eval_sets
    plot_dir = out_dir / "plots"
    if make_plots:
        plot_dir.mkdir(exist_ok=True)
    curves = {}
    for direction in dict.fromkeys(d for d, _ in sets):
        if (direction, "query") not in emb or (direction, "gallery") not in emb:
            continue
        q, qid, qidx = emb[(direction, "query")]
        g, gid, gidx = emb[(direction, "gallery")]
        curves[direction] = (q, qid, g, gid)
        if lit.drop_unmatched_gallery:  # the gallery the metrics were computed on
            keep = torch.isin(gid, qid)
            g, gid, gidx = g[keep], gid[keep], gidx[keep]
        q_paths = [dm.eval_datasets[sets.index((direction, "query"))].records[i].path for i in qidx.tolist()]
        g_paths = [dm.eval_datasets[sets.index((direction, "gallery"))].records[i].path for i in gidx.tolist()]
        write_predictions(out_dir / f"predictions_{direction}.csv", q_paths, qid, q, g_paths, gid, g)
        if make_plots:
            plots.retrieval_strips(q_paths, qid, q, g_paths, gid, g, plot_dir / f"{direction}_top5.png")
    if make_plots and curves:
        payload["recall_curve"] = plots.recall_curve(
            curves, plot_dir / "recall_at_k.png", drop_unmatched_gallery=lit.drop_unmatched_gallery
        )
        if "d2s" in curves:
            plots.embedding_map(*curves["d2s"], plot_dir / "embeddings_2d.png")
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    Console().print(metrics_table(lit.last_metrics, stage))
    return payload


class ResultsWriter(L.Callback):
    """Writes metrics.json and plots when testing ends, on global rank 0 of whatever strategy runs
    (so it works the same in one process, under DDP, ddp_spawn and SLURM)."""

    def __init__(self, out_dir: str | Path, make_plots: bool = True, extra: dict | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.make_plots = make_plots
        self.extra = dict(extra or {})
        self.val_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_metrics = {k: float(v) for k, v in pl_module.last_metrics.items() if k.startswith("val/")}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        extra = dict(self.extra)
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and getattr(ckpt, "best_model_path", ""):
            extra["best_checkpoint"] = ckpt.best_model_path
        if self.val_metrics:
            extra["val"] = self.val_metrics
        write_results(self.out_dir, pl_module, trainer.datamodule, extra=extra, make_plots=self.make_plots)


def read_metrics(out_dir: str | Path) -> dict[str, float]:
    """Test (and last validation) metrics of a run directory, as written by :class:`ResultsWriter`."""
    payload = json.loads((Path(out_dir) / "metrics.json").read_text())
    return {**payload.get("val", {}), **payload["metrics"]}
