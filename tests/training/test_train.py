"""The real entry points on the smoke experiment: train, test, eval, resume, DDP, sweeps, errors."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from mean_geo import eval as eval_entry
from mean_geo import train as train_entry
from tests.helpers.cli import run_hydra_entry, run_module
from tests.helpers.config import compose_config, quiet_overrides

KEYS = ("R@1", "R@5", "R@10", "R@1%", "AP")


def test_smoke_run_writes_metrics_plots_and_checkpoints(smoke_run):
    out, metrics, _ = smoke_run
    payload = json.loads((out / "metrics.json").read_text())
    for stage in ("test", "val"):
        for direction in ("d2s", "s2d"):
            for key in KEYS:
                value = metrics[f"{stage}/{direction}/{key}"]
                assert 0.0 <= value <= 100.0
    assert payload["metrics"] == {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert payload["val"] == {k: v for k, v in metrics.items() if k.startswith("val/")}
    assert payload["protocol"]["drop_unmatched_gallery"] is True
    for name in ("recall_at_k.png", "d2s_top5.png", "s2d_top5.png", "embeddings_2d.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert Path(payload["best_checkpoint"]).is_file()
    rows = (out / "predictions_d2s.csv").read_text().splitlines()
    assert rows[0].startswith("query,location,correct_at_1") and len(rows) == 1 + 5 * 4 * 3  # 5 places x 4 alt x 3
    hits = sum(int(r.split(",")[2]) for r in rows[1:]) / (len(rows) - 1)
    assert 100 * hits == pytest.approx(metrics["test/d2s/R@1"])
    # the smoke world holds 5 held-out places: with the MEAN protocol the D2S gallery is those 5
    assert payload["recall_curve"]["d2s"][4] == 100.0


def test_eval_from_checkpoint_reproduces_the_training_test_metrics(smoke_run, tmp_path, data_dir):
    out, metrics, _ = smoke_run
    best = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    cfg = compose_config("eval", [f"ckpt={best}", *quiet_overrides(tmp_path, data_dir)])
    again = eval_entry.run(cfg)
    expected = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert again == pytest.approx(expected, abs=1e-9)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"] == pytest.approx(expected)


def test_resume_from_last_checkpoint_continues(smoke_run, tmp_path, data_dir):
    out, _, _ = smoke_run
    last = out / "checkpoints" / "last.ckpt"
    first_steps = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    cfg = compose_config(
        "train",
        [
            "experiment=smoke",
            f"resume={last}",
            "trainer.max_epochs=2",
            "test=false",
            *quiet_overrides(tmp_path, data_dir),
        ],
    )
    train_entry.run(cfg)
    resumed = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * first_steps


@pytest.mark.slow
def test_ddp_on_cpu_gives_the_single_process_metrics(smoke_run, tmp_path, data_dir):
    """Two gloo processes evaluate the same checkpoint: gathered, de-duplicated, same numbers."""
    out, metrics, _ = smoke_run
    best = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    cfg = compose_config(
        "eval",
        [
            f"ckpt={best}",
            "hardware=ddp_cpu",
            "eval.plots=false",
            "dataset.eval_batch_size=7",  # odd sizes: DDP pads with repeats
            *quiet_overrides(tmp_path, data_dir),
        ],
    )
    eval_entry.run(cfg)
    payload = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert payload["metrics"] == pytest.approx(expected, abs=1e-6)


def run_cli(args: list[str], tmp: Path, data_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """The command as a user types it, from ``tmp``: the default paths (logs/ under the working
    directory), only the shared data folder through the documented MEAN_GEO_DATA variable."""
    env = {"WANDB_MODE": "offline", "MEAN_GEO_DATA": str(data_dir)}
    return run_module([*args, "trainer.enable_progress_bar=false"], tmp, env, timeout)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["dataset=sues200", "dataset.root=/no/such/place"], "/no/such/place: dataset root does not exist"),
        (["experiment=smoke", "dataset.altitude=175"], "dataset.altitude=175: expected some of"),
        (["experiment=smoke", "loss.cda.variant=mse"], "loss.cda.variant='mse'"),
        (["experiment=smoke", "resume=/no/last.ckpt"], "resume=/no/last.ckpt: no such checkpoint"),
    ],
)
def test_user_errors_are_one_line(args, expected, tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    assert expected in run_hydra_entry(train_entry.main, args, tmp_path, monkeypatch, capsys)


def test_eval_refuses_a_foreign_checkpoint(tmp_path, monkeypatch, capsys):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    line = run_hydra_entry(eval_entry.main, [f"ckpt={foreign}"], tmp_path, monkeypatch, capsys)
    assert "not a mean_geo training checkpoint" in line


def test_bad_override_names_the_key(tmp_path, data_dir):
    res = run_cli(["-m", "mean_geo.train", "experiment=smoke", "model.no_such_knob=3"], tmp_path, data_dir)
    assert res.returncode != 0 and "model.no_such_knob" in res.stderr
