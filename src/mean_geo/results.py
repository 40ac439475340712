"""Write what a run learned into its run directory: metrics.json, plots, and a console table."""

from __future__ import annotations

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


def write_results(
    out_dir: Path,
    lit: MEANLitModule,
    dm: CrossViewDataModule,
    extra: dict | None = None,
    make_plots: bool = True,
    stage: str = "test",
) -> dict:
    """metrics.json (+ plots) from the module's last evaluation; returns what was written."""
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
    emb = lit.last_embeddings
    sets = dm.eval_sets
    if make_plots and emb:
        plot_dir = out_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        curves = {}
        for direction in dict.fromkeys(d for d, _ in sets):
            if (direction, "query") in emb and (direction, "gallery") in emb:
                q, qid, qidx = emb[(direction, "query")]
                g, gid, gidx = emb[(direction, "gallery")]
                curves[direction] = (q, qid, g, gid)
                if lit.drop_unmatched_gallery:  # show the gallery the metrics were computed on
                    keep = torch.isin(gid, qid)
                    g, gid, gidx = g[keep], gid[keep], gidx[keep]
                qds = dm.eval_datasets[sets.index((direction, "query"))]
                gds = dm.eval_datasets[sets.index((direction, "gallery"))]
                plots.retrieval_strips(
                    [qds.records[i].path for i in qidx.tolist()],
                    qid,
                    q,
                    [gds.records[i].path for i in gidx.tolist()],
                    gid,
                    g,
                    plot_dir / f"{direction}_top5.png",
                )
        if curves:
            payload["recall_curve"] = plots.recall_curve(
                curves, plot_dir / "recall_at_k.png", drop_unmatched_gallery=lit.drop_unmatched_gallery
            )
        if ("d2s", "query") in emb and ("d2s", "gallery") in emb:
            q, qid, _ = emb[("d2s", "query")]
            g, gid, _ = emb[("d2s", "gallery")]
            plots.embedding_map(q, qid, g, gid, plot_dir / "embeddings_2d.png")
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
