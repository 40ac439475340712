"""Both notebooks execute top to bottom as Jupyter runs them: started in ``notebooks/`` of a
checkout, they find its ``data/`` and ``logs/`` (tiny world, a real smoke run)."""

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def checkout(tmp_path: Path) -> Path:
    """A folder shaped like a clone (what the notebooks look for), with an empty notebooks/."""
    (tmp_path / "src" / "mean_geo").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def execute(name: str, cwd: Path, env: dict, unset: tuple = ("MEAN_GEO_DATA", "MEAN_GEO_LOGS")) -> str:
    """Run the notebook in ``cwd`` (nbclient raises on the first failing cell); returns its text output."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in (*env, *unset)}
    for k in unset:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.slow
def test_synthetic_world_notebook_writes_into_the_checkouts_data(tmp_path):
    repo = checkout(tmp_path)
    env = {"MEAN_GEO_NB_LOCATIONS": "5", "MEAN_GEO_NB_SIZE": "64", "MPLBACKEND": "Agg"}
    execute("01_synthetic_world.ipynb", repo / "notebooks", env)
    assert (repo / "data" / "notebook_world" / "world.json").is_file()
    assert not (repo / "notebooks" / "data").exists()


@pytest.mark.slow
def test_results_notebook_finds_the_latest_run_in_the_checkouts_logs(tmp_path, smoke_run):
    out, metrics, _ = smoke_run
    repo = checkout(tmp_path)
    run = repo / "logs" / "smoke" / "runs" / "2026-01-01_00-00-00"
    shutil.copytree(out, run)
    text = execute("02_results.ipynb", repo / "notebooks", {"MPLBACKEND": "Agg"})
    assert str(run) in text
    assert f"{metrics['test/d2s/R@1']:8.2f}" in text  # the metrics table of that run
    assert "drone queries fail at rank 1" in text
