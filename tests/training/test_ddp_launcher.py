"""``strategy=ddp`` as ``hardware=ddp`` runs it on GPUs: Lightning's popen launcher starts the other
ranks as new interpreters running the same command, so *every* rank runs the entry point to its
end (``hardware=ddp_cpu``'s ``ddp_spawn`` runs it in the main process only, and hid two crashes).
Emulated with 2 gloo CPU processes, the command as a user types it."""

import json
import re
from pathlib import Path

import lightning as L
import pytest

from mean_geo import eval as eval_entry
from mean_geo.index import build_index
from mean_geo.retrieval.index_store import read_index
from mean_geo.training.index_pipeline import PartWriter
from tests.helpers.cli import run_module
from tests.helpers.config import compose_config, quiet_overrides

DDP = ["hardware=ddp_cpu", "trainer.strategy=ddp", "trainer.enable_progress_bar=false"]
pytestmark = pytest.mark.slow  # DDP on CPU, as the other DDP tests: the whole suite runs them, the fast lane not


def run_ddp(args: list[str], cwd: Path, data_dir: Path):
    res = run_module(["-m", *args, *DDP], cwd, {"WANDB_MODE": "offline", "MEAN_GEO_DATA": str(data_dir)}, 600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "Traceback" not in res.stderr, res.stderr[-4000:]
    return res


def only_run(root: Path) -> Path:
    runs = sorted(p.parent for p in root.rglob("metrics.json"))
    assert len(runs) == 1, runs  # one metrics.json, written by rank 0 alone
    return runs[0]


def test_training_under_the_ddp_launcher_tests_and_writes_metrics_once(smoke_run, tmp_path, data_dir):
    """Point 1: ranks >= 1 no longer die in the CSV header step after fit (rank 0 then hung in the
    test stage's broadcast); point 2: metrics.json exists before any rank reads it."""
    run_ddp(["mean_geo.train", "experiment=smoke", "dataset.batch_size=2", "eval.plots=false"], tmp_path, data_dir)
    run = only_run(tmp_path / "logs")
    payload = json.loads((run / "metrics.json").read_text())
    assert payload["metrics"]["test/d2s/R@1"] >= 0
    # the DDP test stage equals one process evaluating the same checkpoint
    cfg = compose_config("eval", [f"ckpt={payload['tested_checkpoint']}", *quiet_overrides(tmp_path / "one", data_dir)])
    assert eval_entry.run(cfg) == pytest.approx(payload["metrics"], abs=1e-6)


def test_eval_under_the_ddp_launcher_equals_one_process(smoke_run, tmp_path, data_dir):
    out, metrics, _ = smoke_run
    best = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    # odd batches: the distributed sampler pads the shards with repeats, dropped by dataset index
    run_ddp(["mean_geo.eval", f"ckpt={best}", "dataset.eval_batch_size=7", "eval.plots=false"], tmp_path, data_dir)
    payload = json.loads((only_run(tmp_path / "logs") / "metrics.json").read_text())
    assert payload["metrics"] == pytest.approx({k: v for k, v in metrics.items() if k.startswith("test/")}, abs=1e-6)


def test_index_under_the_ddp_launcher_embeds_each_tile_once(smoke_run, tmp_path, data_dir):
    """Point 4: each rank embeds its share of the tiles (training's use_distributed_sampler=false
    made every rank embed all of them), and the index equals one process's."""
    out, _, cfg = smoke_run
    best = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    gallery = Path(cfg.dataset.root) / "Testing" / "150" / "gallery_satellite"
    res = run_ddp(
        ["mean_geo.index", f"gallery_dir={gallery}", f"ckpt={best}", f"out={tmp_path}/ddp.safetensors", "part_size=5"],
        tmp_path,
        data_dir,
    )
    counts = {}
    for part, rank, n in re.findall(r"(part_\d+): rank (\d) of 2 embedded (\d+) tiles", res.stdout + res.stderr):
        counts.setdefault(part, {})[int(rank)] = int(n)
    n_tiles = len(list(gallery.rglob("*.*")))
    parts = [min(5, n_tiles - start) for start in range(0, n_tiles, 5)]
    # a part of n tiles is split between the ranks, each tile once (predict's sampler adds no repeats)
    found = [counts[f"part_{k:05d}"] for k in range(len(parts))]
    assert [sum(c.values()) for c in found] == parts
    assert all(sorted(c.values()) == [n // 2, n - n // 2] for c, n in zip(found, parts, strict=True))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[PartWriter()])
    one = build_index(gallery, best, tmp_path / "one.safetensors", trainer, batch_size=4, num_workers=0)
    ddp, single = read_index(tmp_path / "ddp.safetensors"), read_index(one)
    assert ddp.tiles == single.tiles
    assert (ddp.embeddings - single.embeddings).abs().max() < 1e-5
