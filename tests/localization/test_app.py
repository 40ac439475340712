"""The local app as users run it: ``python -m mean_geo.app`` on loopback, answering through
``gradio_client`` what the page shows, and rendering in a real headless browser (chromium)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import geojson
import pytest
from PIL import Image

from mean_geo.inference.geo import haversine_m
from mean_geo.synthetic.orthophoto import OrthophotoSpec, write_orthophoto
from tests.helpers.browser import chromium
from tests.helpers.cli import free_port, run_module, serving_module
from tests.inference.test_localize import trainer


@pytest.fixture(scope="module")
def served(learned_run, tmp_path_factory):
    """A UTM orthophoto's tiles indexed, and the app serving them (with one view answered on load)."""
    from mean_geo.index import build_index
    from mean_geo.localization.tiling import tile_raster

    out, _, _ = learned_run
    ckpt = Path(json.loads((out / "metrics.json").read_text())["best_checkpoint"])
    root = tmp_path_factory.mktemp("app")
    spec = OrthophotoSpec(crs="EPSG:32632", size_px=512, pixel_m=0.5, views=2, view_m=80.0, seed=3)
    write_orthophoto(spec, root / "ortho")
    tile_raster(root / "ortho" / "map.tif", root / "tiles", [128.0], overlap=0.5)
    index = build_index(root / "tiles", ckpt, root / "tiles.index", trainer(), num_workers=0, features="sift")
    truth = {}
    for line in (root / "ortho" / "views.csv").read_text().splitlines()[1:]:
        path, lat, lon = line.split(",")
        truth[root / "ortho" / path] = (float(lat), float(lon))
    port = free_port()
    example = sorted(truth)[0]
    args = ["-m", "mean_geo.app", "--index", str(index), "--ckpt", str(ckpt), "--port", str(port), "--refine"]
    args += ["--example", str(example)]
    with serving_module(args, root, "mean_geo app on", env={"GRADIO_ANALYTICS_ENABLED": "False"}) as line:
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(url, timeout=30) as page:  # the line comes once the server listens
            assert page.status == 200
        yield url, truth, root


def test_the_app_answers_a_photo_through_gradio_client(served):
    from gradio_client import Client, handle_file

    url, truth, _ = served
    client = Client(url, verbose=False)
    photos = sorted(truth)
    table, map_png, strips, inliers, files = client.predict(
        [handle_file(str(p)) for p in photos], True, api_name="/localize"
    )
    rows = table["data"] if isinstance(table, dict) else table
    assert [r[0] for r in rows] == [p.name for p in photos]
    for row, photo in zip(rows, photos, strict=True):
        assert row[3] == "refined"
        assert haversine_m(truth[photo], (row[1], row[2])) < 1.5  # where the view was cut
    assert Image.open(map_png).size == (640, 640)
    assert len(strips) == len(photos) and len(inliers) == len(photos)
    downloads = {Path(f).suffix: Path(f) for f in files}
    assert set(downloads) == {".geojson", ".kml"}
    collection = geojson.loads(downloads[".geojson"].read_text())
    assert collection.is_valid and sum(f["properties"]["kind"] == "position" for f in collection["features"]) == 2


def test_requests_are_bounded(served):
    from gradio_client import Client, handle_file

    url, truth, _ = served
    client = Client(url, verbose=False)
    too_many = [handle_file(str(sorted(truth)[0]))] * 17
    with pytest.raises(Exception, match="at most 16 a request"):
        client.predict(too_many, False, api_name="/localize")
    with pytest.raises(Exception, match="no photo given"):
        client.predict([], False, api_name="/localize")


def test_the_page_renders_in_headless_chromium(served, tmp_path):
    url, _, _ = served
    common = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert "where was this photo taken?" in dom.stdout, dom.stderr[-2000:]
    assert "view_00.png" in dom.stdout  # the example photo, answered when the page opened
    shot = tmp_path / "app.png"
    subprocess.run([*common, "--window-size=1280,1100", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 1100) and image.getextrema()[1] - image.getextrema()[0] > 100  # not blank


def test_a_missing_extra_is_one_line(tmp_path):
    """Without gradio installed the app names the extra (simulated: a gradio that fails to import
    shadows the real one from the working directory, first on ``python -m``'s path)."""
    (tmp_path / "gradio").mkdir()
    (tmp_path / "gradio" / "__init__.py").write_text("raise ImportError('No module named gradio')\n")
    done = run_module(["-m", "mean_geo.app", "--index", "x.index", "--ckpt", "m.ckpt"], tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "pip install -e '.[app]'" in lines[0], done.stderr
