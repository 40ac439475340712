"""Maps in, maps out: georeferenced rasters in EPSG:4326, a UTM zone and Web Mercator (written with
rasterio), tiled, indexed, and views cut from known points localized back to them; every answer
format parsed back by a real parser."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import fastkml
import geojson
import gpxpy
import numpy as np
import pyproj
import pytest
import rasterio
import shapely.geometry
from PIL import Image

from mean_geo.errors import MeanGeoError
from mean_geo.index import build_index
from mean_geo.inference.answers import photo_answers
from mean_geo.inference.geo import haversine_m, locate_tiles_on_ground
from mean_geo.inference.localization import localize
from mean_geo.inference.refinement import TileStore, refine_photos
from mean_geo.localization.formats import render
from mean_geo.localization.georef import read_georeference
from mean_geo.localization.matching import build_matcher
from mean_geo.localization.refine import RefineSettings
from mean_geo.localization.tiling import plan_grid, tile_raster
from mean_geo.retrieval.index_store import read_index
from mean_geo.synthetic.orthophoto import OrthophotoSpec, write_orthophoto
from tests.inference.test_localize import trainer

CRSS = {"EPSG:4326": (47.37, 8.54), "EPSG:32633": (48.21, 16.37), "EPSG:3857": (-33.87, 151.21)}


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """Per CRS: the map, its tiles (128 m, half overlap) and the views' truth."""
    out = {}
    for seed, (crs, (lat, lon)) in enumerate(CRSS.items()):
        root = tmp_path_factory.mktemp("maps") / crs.replace(":", "_")
        spec = OrthophotoSpec(crs=crs, lat=lat, lon=lon, size_px=640, pixel_m=0.5, views=2, view_m=80.0, seed=seed)
        write_orthophoto(spec, root / "ortho")
        report = tile_raster(root / "ortho" / "map.tif", root / "tiles", [128.0], overlap=0.5)
        assert report.written == {128.0: 16} and report.skipped == {128.0: 0}  # 4 x 4 tiles of 256 px
        with (root / "ortho" / "views.csv").open() as fh:
            truth = {root / "ortho" / r["path"]: (float(r["lat"]), float(r["lon"])) for r in csv.DictReader(fh)}
        out[crs] = (root, truth)
    return out


@pytest.mark.parametrize("crs", list(CRSS))
def test_tile_positions_are_pyprojs_to_a_millionth_of_a_degree(maps, crs):
    root, _ = maps[crs]
    tiles = sorted((root / "tiles").glob("*.tif"))
    centres, geometries = locate_tiles_on_ground(tiles, root / "tiles")
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for path, centre, geometry in zip(tiles, centres, geometries, strict=True):
        with rasterio.open(path) as ds:  # the tile's own georeferencing, as rasterio reads it
            assert ds.crs == rasterio.crs.CRS.from_user_input(crs) and (ds.width, ds.height) == (256, 256)
            transform = ds.transform
        for col, row in [(127.5, 127.5), (0, 0), (255, 0), (0, 255), (255, 255), (40.25, 200.75)]:
            x, y = transform @ (col + 0.5, row + 0.5)  # rasterio's transform takes pixel corners
            lon, lat = to_lonlat.transform(x, y)
            if (col, row) == (127.5, 127.5):
                assert centre == pytest.approx((lat, lon), abs=1e-9)
            assert geometry.to_latlon(col, row) == pytest.approx((lat, lon), abs=1e-6)
    # the tiles cover the map: the corner tiles' outer corners are the map's
    with rasterio.open(root / "ortho" / "map.tif") as ds:
        map_bounds = ds.bounds
    lefts = [rasterio.open(p).bounds.left for p in tiles]
    rights = [rasterio.open(p).bounds.right for p in tiles]
    assert min(lefts) == pytest.approx(map_bounds.left) and max(rights) == pytest.approx(map_bounds.right)


def test_tile_sizes_are_ground_metres_whatever_the_crs(maps):
    """A Web Mercator metre is not a ground metre away from the equator: 128 m tiles are 256 pixels
    of 0.5 ground metres in every CRS."""
    for crs, (root, _) in maps.items():
        found = read_georeference(root / "ortho" / "map.tif")
        across, down = found.ground_pixel_m()
        assert across == pytest.approx(0.5, rel=1e-3) and down == pytest.approx(0.5, rel=1e-3), crs
    grid = plan_grid(1000, 600, (0.5, 0.5), 100.0, 0.5)
    assert (grid.width_px, grid.cols[:3], grid.cols[-1], grid.rows[-1]) == (200, (0, 100, 200), 800, 400)
    with pytest.raises(MeanGeoError, match="larger than the map"):
        plan_grid(100, 100, (1.0, 1.0), 200.0, 0.5)


@pytest.fixture(scope="module")
def localized(maps, learned_run, tmp_path_factory):
    """Each map's tiles indexed with a trained model, its views localized and refined."""
    out, _, _ = learned_run
    ckpt = Path(json.loads((out / "metrics.json").read_text())["best_checkpoint"])
    found = {}
    for crs, (root, truth) in maps.items():
        index_path = build_index(
            root / "tiles", ckpt, tmp_path_factory.mktemp("index") / "tiles.index", trainer(), num_workers=0
        )
        index = read_index(index_path)
        photos = sorted(truth)
        results = localize(photos, index, ckpt, k=16)
        settings = RefineSettings(top_n=16)
        refined = refine_photos(photos, results, TileStore(index, build_matcher("sift")), settings)
        answers = photo_answers(photos, results, index, 5, [r.position for r in refined])
        found[crs] = (answers, truth)
    return found


@pytest.mark.parametrize("crs", list(CRSS))
def test_views_cut_from_known_points_are_localized_there(localized, crs):
    answers, truth = localized[crs]
    for answer in answers:
        assert answer.source == "refined", answer.reason
        error = haversine_m(truth[Path(answer.photo)], (answer.lat, answer.lon))
        assert error < 1.5, (answer.photo, error)  # a pixel is 0.5 m


def test_every_format_parses_back_with_a_real_parser(localized, tmp_path):
    answers, truth = localized["EPSG:32633"]
    # GeoJSON: valid for the geojson package, and shapely places the points inside their footprints
    collection = geojson.loads(render("geojson", answers))
    assert collection.is_valid, collection.errors()
    points = [f for f in collection["features"] if f["properties"]["kind"] == "position"]
    tiles = [f for f in collection["features"] if f["properties"]["kind"] == "tile"]
    assert len(points) == len(answers) and len(tiles) == 5 * len(answers)
    for point, answer in zip(points, answers, strict=True):
        lon, lat = point["geometry"]["coordinates"]
        assert (lat, lon) == pytest.approx((answer.lat, answer.lon)) and point["properties"]["source"] == "refined"
        mine = [t for t in tiles if t["properties"]["photo"] == answer.photo]
        polygons = [shapely.geometry.shape(t["geometry"]) for t in mine]
        assert all(p.is_valid and p.area > 0 for p in polygons)
        assert any(p.contains(shapely.geometry.Point(lon, lat)) for p in polygons)  # one of its tiles holds it
    # KML: fastkml reads the placemarks and their coordinates
    kml = fastkml.kml.KML.from_string(render("kml", answers).encode())
    document = next(iter(kml.features))
    marks = list(document.features)
    assert len(marks) == len(answers) + 5 * len(answers)
    first = marks[0].geometry
    assert (first.y, first.x) == pytest.approx((answers[0].lat, answers[0].lon))
    assert marks[1].geometry.geom_type == "Polygon"
    # GPX: gpxpy reads a waypoint per photo; a flight adds a track in frame order
    gpx = gpxpy.parse(render("gpx", answers, track=True))
    expected = [v for a in answers for v in (a.lat, a.lon)]
    assert [v for w in gpx.waypoints for v in (w.latitude, w.longitude)] == pytest.approx(expected)
    assert [v for p in gpx.tracks[0].segments[0].points for v in (p.latitude, p.longitude)] == pytest.approx(expected)
    track = geojson.loads(render("geojson", answers, track=True))
    line = [f for f in track["features"] if f["properties"]["kind"] == "track"][0]
    assert shapely.geometry.shape(line["geometry"]).geom_type == "LineString"
    # CSV and JSON: the standard library's readers
    rows = list(csv.DictReader(io.StringIO(render("csv", answers))))
    assert [float(r["lat"]) for r in rows] == pytest.approx([a.lat for a in answers])
    assert json.loads(render("json", answers))[0]["tiles"][0]["footprint"] is not None


def test_rasters_that_cannot_be_placed_are_one_line(tmp_path):
    plain = tmp_path / "plain.tif"
    Image.new("RGB", (64, 64)).save(plain)
    with pytest.raises(MeanGeoError, match="plain.tif: no georeferencing"):
        tile_raster(plain, tmp_path / "out", [10.0])
    rotated = tmp_path / "rotated.tif"
    transform = rasterio.transform.Affine(0.5, 0.1, 465000.0, 0.1, -0.5, 5247000.0)
    profile = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32632", transform=transform)
    with rasterio.open(rotated, "w", **profile) as dst:
        dst.write(np.zeros((1, 64, 64), dtype=np.uint8))
    with pytest.raises(MeanGeoError, match="rotated.tif: a rotated or sheared raster"):
        tile_raster(rotated, tmp_path / "out", [10.0])
    unknown = tmp_path / "unknown.tif"
    profile.update(transform=rasterio.transform.Affine(0.5, 0, 465000.0, 0, -0.5, 5247000.0), crs=None)
    with rasterio.open(unknown, "w", **profile) as dst:
        dst.write(np.zeros((1, 64, 64), dtype=np.uint8))
    with pytest.raises(MeanGeoError, match="unknown.tif: georeferenced without a CRS"):
        tile_raster(unknown, tmp_path / "out", [10.0])
    assert not (tmp_path / "out").exists()


def test_nodata_tiles_are_skipped_and_counted_and_nothing_is_written_over(tmp_path):
    path = tmp_path / "half.tif"
    data = np.zeros((3, 200, 200), dtype=np.uint8)
    data[:, :, :100] = np.random.default_rng(0).integers(1, 255, size=(3, 200, 100), dtype=np.uint8)
    transform = rasterio.transform.Affine(1.0, 0, 465000.0, 0, -1.0, 5247000.0)
    profile = dict(driver="GTiff", width=200, height=200, count=3, dtype="uint8", crs="EPSG:32632", nodata=0)
    with rasterio.open(path, "w", transform=transform, **profile) as dst:
        dst.write(data)
    report = tile_raster(path, tmp_path / "tiles", [50.0], overlap=0.0)
    assert report.written == {50.0: 8} and report.skipped == {50.0: 8}  # the right half is nodata
    assert len(list((tmp_path / "tiles").glob("*.tif"))) == 8
    with pytest.raises(MeanGeoError, match="exists and is not an empty folder"):
        tile_raster(path, tmp_path / "tiles", [50.0])
    assert math.isclose(read_georeference(tmp_path / "tiles" / "half_50m_r000_c000.tif").transform[0], 1.0)


def test_index_takes_the_map_itself_and_tiles_it_once(maps, learned_run, tmp_path):
    from tests.helpers.cli import run_module

    out, _, _ = learned_run
    ckpt = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    root, _ = maps["EPSG:32633"]
    args = ["-m", "mean_geo.index", f"gallery_dir={root / 'ortho' / 'map.tif'}", f"ckpt={ckpt}", "out=m.index"]
    args += ["tile_m=128", "num_workers=0", "trainer.enable_progress_bar=false"]
    done = run_module(args, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    index = read_index(tmp_path / "m.index")
    assert len(index.tiles) == 16 and all(t["geometry"] and t["latlon"] for t in index.tiles)
    assert sorted(Path(t["path"]).name for t in index.tiles) == sorted(p.name for p in (root / "tiles").glob("*.tif"))
    again = run_module([*args[:-3], "tile_m=100", "num_workers=0"], tmp_path)  # not the tiles it holds
    assert again.returncode == 2 and "m_tiles: holds files that are not map.tif's tiles at 100 m" in again.stderr


def test_a_basemap_of_the_users_own_goes_under_the_map(tmp_path):
    """``--basemap``: XYZ tiles fetched from the user's server (here a local one) under the answers;
    a server that does not answer leaves the map without it."""
    import http.server
    import threading

    import torch

    from mean_geo.inference.map_image import draw_answers_map
    from mean_geo.localization.formats import PhotoAnswer
    from mean_geo.retrieval.index_store import GalleryIndex

    green = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 200, 10)).save(green, "PNG")
    asked = []

    class Tiles(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's name
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(green.getvalue())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = GalleryIndex(torch.zeros(0, 4), [], "x", 64)
        answers = [PhotoAnswer("a.png", 47.37, 8.54, "top1", 0.9), PhotoAnswer("b.png", 47.372, 8.543, "top1", 0.8)]
        url = f"http://127.0.0.1:{server.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
        drawn = draw_answers_map(answers, index, tmp_path / "map.png", basemap=url)
        assert asked and all(p.count("/") == 3 and p.endswith(".png") for p in asked)
        assert Image.open(drawn).getpixel((3, 3)) == (10, 200, 10)  # the basemap, where nothing else is
    finally:
        server.shutdown()
    drawn = draw_answers_map(answers, index, tmp_path / "none.png", basemap="http://127.0.0.1:9/{z}/{x}/{y}.png")
    assert Image.open(drawn).getpixel((3, 3)) == (235, 235, 230)  # no server: the plain background
