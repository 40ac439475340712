"""Dashboards as researchers expect: one W&B run per sweep job, named and grouped, with the full
config, the figures and the predictions table; the same figures in TensorBoard; a run log file."""

from __future__ import annotations

import json

import pytest

from mean_geo import train as train_entry
from tests.helpers.config import compose_config, quiet_overrides
from tests.helpers.wandb_records import records, summarize
from tests.training.test_train import run_cli

FIGURES = ("recall_at_k", "d2s_top5", "s2d_top5", "embeddings_2d")


@pytest.mark.slow
def test_wandb_sweep_gives_one_named_grouped_run_per_job(tmp_path, data_dir):
    pytest.importorskip("wandb")
    args = ["-m", "mean_geo.train", "-m", "experiment=smoke", "seed=1,2", "logger=wandb", "logger.wandb.log_model=true"]
    res = run_cli(args, tmp_path, data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted((tmp_path / "logs" / "smoke" / "multiruns").glob("*/[0-9]"))
    assert [j.name for j in jobs] == ["0", "1"]
    runs = []
    for job, seed in zip(jobs, (1, 2), strict=True):
        assert json.loads((job / "metrics.json").read_text())["metrics"]["test/d2s/R@1"] >= 0
        log_text = (job / "train.log").read_text()
        assert "steps/s" in log_text and "test retrieval (%)" in log_text
        (run_dir,) = (job / "wandb").glob("offline-run-*")  # one run per job, in the job's folder
        run = summarize(run_dir)
        assert run["name"] == f"smoke seed={seed}" and run["job_type"] == "train"
        config = run["config"]
        assert config["seed"] == seed and config["optim"]["optimizer"]["lr"] == 1e-3
        assert config["dataset"]["batch_size"] == 4 and config["trainer"]["precision"] == "32-true"
        assert config["run"]["choices"]["hardware"] == "cpu" and config["run"]["experiment"] == "smoke"
        assert f"seed={seed}" in config["run"]["overrides"] and "git_commit" in config["run"]
        keys = run["history_keys"]
        for stage in ("val", "test"):
            for fig in FIGURES:
                assert f"{stage}/{fig}/_type" in keys, (stage, fig)
        assert "test/predictions_d2s/nrows" in keys and "train/loss" in keys
        artifacts = [r for r in records(next(run_dir.glob("run-*.wandb"))) if r.WhichOneof("record_type") == "artifact"]
        assert any(a.artifact.type == "model" for a in artifacts)  # log_model=true: the checkpoint
        runs.append(run)
    assert runs[0]["group"] == runs[1]["group"] and runs[0]["group"].startswith("smoke ")


def test_tensorboard_gets_the_figures_and_the_predictions(tmp_path, data_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config("train", ["experiment=smoke", "logger=tensorboard", *quiet_overrides(tmp_path, data_dir)])
    train_entry.run(cfg)
    tags: dict[str, set] = {"images": set(), "tensors": set(), "scalars": set()}
    for folder in {p.parent for p in (tmp_path / "out" / "tensorboard").rglob("events.out.tfevents.*")}:
        acc = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0})
        acc.Reload()
        for kind in tags:
            tags[kind].update(acc.Tags()[kind])
    assert {f"{stage}/{fig}" for stage in ("val", "test") for fig in FIGURES} <= tags["images"]
    assert any(t.startswith("test/predictions_d2s") for t in tags["tensors"])
    assert "test/d2s/R@1" in tags["scalars"]
