"""Both notebooks execute top to bottom on a tiny world and a real smoke run."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, cwd: Path, env: dict) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.slow
def test_synthetic_world_notebook(tmp_path):
    env = {
        "MEAN_GEO_WORLD": str(tmp_path / "world"),
        "MEAN_GEO_NB_LOCATIONS": "5",
        "MEAN_GEO_NB_SIZE": "64",
        "MPLBACKEND": "Agg",
    }
    execute("01_synthetic_world.ipynb", tmp_path, env)
    assert (tmp_path / "world" / "world.json").is_file()


@pytest.mark.slow
def test_results_notebook(tmp_path, smoke_run):
    out, _, _ = smoke_run
    execute("02_results.ipynb", tmp_path, {"MEAN_GEO_RUN": str(out), "MPLBACKEND": "Agg"})
