"""A non-editable install works from any directory: the top-level conf/ installs as mean_geo/conf."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mean_geo.cli import CONF_DIR

REPO = Path(__file__).resolve().parents[1]


def _declared_packages() -> list[str]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_the_package_list_names_every_package_under_src_and_the_configs():
    # a new sub-package missing from pyproject's explicit list would be left out of the wheel
    found = {".".join(init.parent.relative_to(REPO / "src").parts) for init in (REPO / "src").rglob("__init__.py")}
    assert set(_declared_packages()) == found | {"mean_geo.conf"}


def test_the_configs_have_one_copy_at_the_top_level():
    assert Path(CONF_DIR) == REPO / "conf"
    assert not (REPO / "src" / "mean_geo" / "conf").exists()


@pytest.mark.slow
def test_installed_wheel_trains_the_smoke_experiment_from_an_unrelated_directory(tmp_path):
    site, source = tmp_path / "site", tmp_path / "source"
    # from a copy: an in-tree build writes build/ into the checkout
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "conf", source / "conf")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--disable-pip-version-check", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
    )
    shipped = {p.relative_to(site / "mean_geo" / "conf") for p in (site / "mean_geo" / "conf").rglob("*.yaml")}
    assert shipped == {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}
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
        [sys.executable, "-m", "mean_geo.train", "experiment=smoke"],  # exactly as the README says
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = (elsewhere / "logs" / "smoke" / "runs").glob("*/metrics.json")
    assert (metrics.parent / "train.log").stat().st_size > 0
    assert not (REPO / "conf" / "logs").exists() and not (site / "mean_geo" / "conf" / "logs").exists()
