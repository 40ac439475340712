"""Habits the code keeps: Google-style docstrings on the public API, types checked where formats
and inference live (pyproject's [tool.mypy] lists them)."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import mean_geo
from mean_geo.datamodules import DATAMODULES

REPO = Path(__file__).resolve().parents[1]
#: the modules that define what ``mean_geo`` exports, the datamodules and the registries
PUBLIC_API_MODULES = [
    "src/mean_geo/__init__.py",
    "src/mean_geo/errors.py",
    "src/mean_geo/inference/loading.py",
    "src/mean_geo/inference/localization.py",
    "src/mean_geo/retrieval/index_store.py",
    "src/mean_geo/retrieval/search.py",
    "src/mean_geo/retrieval/evaluate.py",
    "src/mean_geo/models/mean.py",
    "src/mean_geo/models/peers.py",
    "src/mean_geo/losses/peers.py",
    "src/mean_geo/models/registry.py",
    "src/mean_geo/losses/registry.py",
    "src/mean_geo/losses/objectives.py",
    "src/mean_geo/data/datamodule.py",
    "src/mean_geo/utils/registry.py",
]


def test_the_public_api_modules_follow_pydocstyle_google():
    # D105/D107: magic methods and __init__ are documented by their class (Args in its docstring)
    cmd = [sys.executable, "-m", "ruff", "check", "--select", "D", "--ignore", "D105,D107", *PUBLIC_API_MODULES]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _public_api():
    objects = {name: getattr(mean_geo, name) for name in mean_geo.__all__ if name != "__version__"}
    objects.update({f"dataset.name={name}": cls for name, cls in DATAMODULES.items()})
    return objects


@pytest.mark.parametrize("name, obj", list(_public_api().items()))
def test_every_public_name_documents_its_arguments_and_result(name, obj):
    """Args (and Returns for a function) sections, as Google style has them."""
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        takes = [p for p in inspect.signature(obj.__init__).parameters if p not in ("self", "args", "kwargs")]
        needed = ["Args:"] if takes and "__init__" in vars(obj) else []
    else:
        needed = ["Returns:"] + (["Args:"] if inspect.signature(obj).parameters else [])
    assert all(section in doc for section in needed), f"{name}: docstring lacks {needed}"


def test_inference_retrieval_and_the_formats_type_check(monkeypatch):
    from mypy import api  # the dev extra's

    monkeypatch.chdir(REPO)  # [tool.mypy] files are relative to the checkout
    out, err, status = api.run(
        ["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(REPO / ".mypy_cache")]
    )
    assert status == 0, out + err
