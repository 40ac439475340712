"""A non-editable install works from any directory: the Hydra configs ship inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_wheel_trains_the_smoke_experiment_from_an_unrelated_directory(tmp_path):
    site, source = tmp_path / "site", tmp_path / "source"
    # from a copy: an in-tree build writes build/ into the checkout
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--disable-pip-version-check", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
    )
    assert (site / "mean_geo" / "conf" / "train.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    where = subprocess.run(
        [sys.executable, "-c", "import mean_geo; print(mean_geo.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(site)), where  # the installed copy, not the checkout
    proc = subprocess.run(
        [sys.executable, "-m", "mean_geo.train", "experiment=smoke", "trainer.enable_progress_bar=false"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = (elsewhere / "logs" / "smoke" / "runs").glob("*/metrics.json")
    assert (metrics.parent / "train.log").stat().st_size > 0
    assert not (REPO / "src" / "mean_geo" / "conf" / "logs").exists()
