"""Docs that cannot rot: every `python -m mean_geo…` command in the code blocks of the README and
of docs/ runs.

Each command runs as written, from a fresh temporary directory (default paths: data/ and logs/
under it), with only these changes:
- placeholders become real files: ``logs/...`` checkpoints (from a first `experiment=smoke` run,
  which is what `make smoke` runs), ``/data/tiles`` + its CSV, ``photo.jpg`` / ``more_photos/``;
  ``[--json]`` (an optional flag) is given;
- smoke sizes where a command would run for long: fewer/smaller synthetic places, 2 Optuna trials;
- compose only (``--cfg job``, without ``-m``) where it needs a real dataset, a GPU or SLURM.
A command that no longer works as documented fails here.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import subprocess
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import geojson
import gpxpy
import pytest
import torch

from mean_geo.models.peers import DAC
from tests.helpers.cli import free_port, run_module, serving_module
from tests.models.test_official_peers import to_theirs

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NEEDS_MORE_THAN_THIS_MACHINE = re.compile(
    r"dataset=(sues200|university1652|denseuav|gta_uav)\b|hardware=(ddp|gpu\w*|slurm)(\s|$)"
)
SMOKE_SIZED = {
    "mean_geo.synth": ["--locations", "6", "--size", "32", "--drone-per-location", "2"],
    "hparams_search=optuna": ["hydra.sweeper.n_trials=2"],
    "experiment=demo_gta_uav": [
        "dataset.synthesize.locations=100",
        "dataset.batch_size=4",
        "trainer.max_steps=2",
        "eval.plots=false",
    ],
    "experiment=demo_denseuav": [
        "dataset.synthesize.locations=12",
        "dataset.synthesize.test_locations=4",
        "dataset.batch_size=4",
        "trainer.max_steps=2",
        "eval.plots=false",
    ],
    "experiment=demo_dino": [
        "dataset.synthesize.locations=12",
        "dataset.synthesize.test_locations=4",
        "dataset.batch_size=4",
        "trainer.max_steps=2",
        "eval.plots=false",
    ],
    # the four-method demo sweep (docs/methods.md): each method on a smoke-sized world, two steps
    "experiment=demo method=": [
        "dataset.synthesize.locations=12",
        "dataset.synthesize.test_locations=4",
        "dataset.batch_size=4",
        "trainer.max_steps=2",
        "eval.plots=false",
    ],
}


def readme_commands() -> list[str]:
    commands = []
    text = "\n".join(doc.read_text() for doc in DOCS)
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if line.startswith("python -m mean_geo"):
                commands.append(line)
    return list(dict.fromkeys(commands))  # a command shown in the README and again in docs/ runs once


def test_the_readme_documents_the_main_commands():
    text = " ".join(readme_commands())
    for needed in (
        "mean_geo.train",
        "mean_geo.eval",
        "mean_geo.index",
        "mean_geo.localize",
        "mean_geo.export",
        "mean_geo.check",
        " -m ",
    ):
        assert needed in text


def _run(args: list[str], cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    # the default paths: the caller's MEAN_GEO_DATA / MEAN_GEO_LOGS must not leak in
    return run_module(args, cwd, {"WANDB_MODE": "offline"}, timeout, unset=("MEAN_GEO_DATA", "MEAN_GEO_LOGS"))


def readme_module(name: str) -> str:
    """The docs' example module ``name`` (a python block that starts ``# <name>``: the README or
    docs/), as a user would save it beside their command."""
    text = "\n".join(doc.read_text() for doc in DOCS)
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        source = textwrap.dedent(block)
        if source.startswith(f"# {name}"):
            return source
    raise AssertionError(f"neither the README nor docs/ show a module {name}")


def _placeholders(work: Path) -> dict[str, str]:
    """Real files for the README's placeholders, from a smoke run in ``work``; the README's
    plugin module saved beside the commands, as the README says."""
    (work / "my_mean.py").write_text(readme_module("my_mean.py"))
    res = _run(["-m", "mean_geo.train", "experiment=smoke"], work)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = (work / "logs" / "smoke" / "runs").glob("*")
    world = next((work / "data" / "synthetic").glob("sues200_*"))
    tiles, photos = work / "tiles", work / "more_photos"
    tiles.mkdir(), photos.mkdir()
    with (work / "tiles.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "lat", "lon", "m_per_px"])  # the README's CSV, with the ground size --refine needs
        for i, tile in enumerate(sorted((world / "Testing" / "150" / "gallery_satellite").glob("*/*"))[:6]):
            shutil.copy(tile, tiles / f"{tile.parent.name}{tile.suffix}")
            out.writerow([f"{tile.parent.name}{tile.suffix}", 31.2 + i / 100, 121.4 + i / 100, 200 / 64])
    drone = sorted((world / "Testing" / "150" / "query_drone").glob("*/*"))
    shutil.copy(drone[0], work / "photo.jpg")
    for p in drone[1:3]:
        shutil.copy(p, photos / p.name)
    their_dac = work / "their_dac.pth"  # the authors' DAC layout, real-shaped (random weights)
    torch.save(to_theirs(DAC(701)), their_dac)
    return {
        "THEIR_DAC.pth": str(their_dac),
        "logs/.../checkpoints/last.ckpt": str(run / "checkpoints" / "last.ckpt"),
        "logs/.../checkpoints/epoch_000.ckpt": str(run / "checkpoints" / "epoch_000.ckpt"),
        "logs/.../epoch_000.ckpt": str(run / "checkpoints" / "epoch_000.ckpt"),
        "/data/tiles.csv": str(work / "tiles.csv"),
        "/data/tiles": str(tiles),
        "[--json]": "--json",
    }


def as_run_here(command: str, placeholders: dict[str, str]) -> tuple[list[str], bool]:
    """The argv to run for a README command, and whether it only composes (``--cfg job``)."""
    for key, value in placeholders.items():
        command = command.replace(key, value)
    args = shlex.split(command)[1:]  # drop "python"
    for marker, extra in SMOKE_SIZED.items():
        if marker in command and not (marker == "mean_geo.synth" and "--layout orthophoto" in command):
            args += extra
    compose_only = bool(NEEDS_MORE_THAN_THIS_MACHINE.search(command))
    if compose_only:
        args = [a for a in args[:2]] + [a for a in args[2:] if a != "-m"] + ["--cfg", "job"]
    return args, compose_only


def _run_in_order(commands: list[str], placeholders: dict[str, str], cwd: Path) -> list[str]:
    """Run ``commands`` one after another; returns what failed (with its error)."""
    failures = []
    for command in commands:
        args, compose_only = as_run_here(command, placeholders)
        if "mean_geo.app" in command:  # a server: it must serve its page, then it is stopped
            failures += _serve_app(command, args, cwd)
            continue
        res = _run(args, cwd)
        if res.returncode != 0:
            failures.append(f"{command}\n  -> exit {res.returncode}: {res.stderr.strip()[-800:]}")
        elif compose_only and "dataset:" not in res.stdout:
            failures.append(f"{command}\n  -> printed no composed config")
        elif "mean_geo.localize" in command and not json.loads(res.stdout)[0]["matches"]:
            failures.append(f"{command}\n  -> no matches")
    return failures


def _serve_app(command: str, args: list[str], cwd: Path) -> list[str]:
    port = free_port()
    env = {"WANDB_MODE": "offline", "GRADIO_ANALYTICS_ENABLED": "False"}
    try:
        with serving_module([*args, "--port", str(port)], cwd, "mean_geo app on", env=env):
            for _ in range(60):  # the line comes just before the server listens
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
                        html = page.read().decode()
                    break
                except OSError:
                    time.sleep(1)
            else:
                return [f"{command}\n  -> served nothing on port {port}"]
    except AssertionError as exc:
        return [f"{command}\n  -> {exc}"]
    return [] if "gradio" in html.lower() else [f"{command}\n  -> not the app's page"]


@pytest.mark.slow
def test_every_readme_command_runs_as_documented(tmp_path):
    placeholders = _placeholders(tmp_path)
    commands = readme_commands()
    # two lanes on two cores: the sweeps (timestamped multirun folders) in one, in order; the rest
    # (single runs, compose-only, index before localize) in the other, so no two share a folder
    # (the report reads what the sweeps wrote: it runs after them, in their lane)
    sweeps = [
        c for c in commands if (" -m " in c.removeprefix("python -m ") and "--cfg" not in c) or "mean_geo.report" in c
    ]
    rest = [c for c in commands if c not in sweeps]
    with ThreadPoolExecutor(2) as lanes:
        failures = [
            f for lane in lanes.map(lambda cs: _run_in_order(cs, placeholders, tmp_path), [sweeps, rest]) for f in lane
        ]
    assert not failures, "README commands that fail:\n" + "\n".join(failures)
    # what the commands promise to write
    assert (tmp_path / "tiles.index").is_file()
    # the map path: a GeoTIFF tiled, indexed, the views localized into files map programs open
    assert len(list((tmp_path / "data" / "ortho_tiles").glob("*.tif"))) == 49
    located = geojson.loads((tmp_path / "located" / "localized.geojson").read_text())
    assert located.is_valid and sum(f["properties"]["kind"] == "position" for f in located["features"]) == 4
    assert (tmp_path / "located" / "localized.kml").is_file()
    flight = gpxpy.parse((tmp_path / "flight_out" / "localized.gpx").read_text())
    assert len(flight.tracks[0].segments[0].points) == len(flight.waypoints) > 1  # the frames, as a track
    assert (tmp_path / "exports" / "mean_sues200_150m" / "model.onnx").is_file()
    assert len(list((tmp_path / "logs" / "smoke" / "multiruns").glob("*/*/metrics.json"))) >= 3 + 1 + 2
    assert len(list((tmp_path / "logs" / "demo" / "multiruns").glob("*/*/metrics.json"))) == 4  # the methods
    assert (tmp_path / "dac_export" / "model.safetensors").is_file()
    assert list((tmp_path / "logs" / "eval" / "runs").glob("*/metrics.json"))
    report = (tmp_path / "report.md").read_text()
    assert "the protocols differ in: image_size" in report and "| 3 |" in report  # three seeds, one row
