"""DenseUAV read as it ships: a miniature tree written here from the release's facts (not by our
synthetic writer), its GPS file, its metrics against hand-computed values, check, and a real run."""

import io
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from mean_geo.check import extra_checks
from mean_geo.data import denseuav
from mean_geo.data.official_counts import count
from mean_geo.errors import DatasetLayoutError
from mean_geo.retrieval.denseuav_metrics import denseuav_metrics
from tests.helpers.cli import run_module, train_tiny

TRAIN = [f"{i:06d}" for i in range(6)]
TEST = [f"{i:06d}" for i in range(6, 9)]  # the test ids follow the training ids, as released
TILES = ("H80.tif", "H90.tif", "H100.tif", "H80_old.tif", "H90_old.tif", "H100_old.tif")
PHOTOS = ("H80.JPG", "H90.JPG", "H100.JPG")


def _image(fmt: str, shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (shade, 255 - shade, (3 * shade) % 256)).save(buf, format=fmt)
    return buf.getvalue()


def lat_lon(place: str) -> tuple[float, float]:
    i = int(place)
    return 30.3 + 0.0003 * (i % 3), 120.35 + 0.0004 * (i // 3)


def denseuav_tree(root: Path, absolute_paths: bool = False) -> Path:
    """The release's layout in miniature: train/{drone,satellite}/<id>/, test/{query,gallery}_*/<id>/,
    galleries with every place, the GPS files (longitude first)."""

    def place(folder: Path, loc: str, drone: bool) -> None:
        (folder / loc).mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(PHOTOS if drone else TILES):
            (folder / loc / name).write_bytes(_image("JPEG" if drone else "TIFF", 20 * int(loc) + k))

    for loc in TRAIN:
        place(root / "train" / "drone", loc, True)
        place(root / "train" / "satellite", loc, False)
    for loc in TEST:
        place(root / "test" / "query_drone", loc, True)
        place(root / "test" / "query_satellite", loc, False)
    for loc in TRAIN + TEST:
        place(root / "test" / "gallery_drone", loc, True)
        place(root / "test" / "gallery_satellite", loc, False)
    prefix = f"{root}/" if absolute_paths else ""

    def line(split: str, loc: str) -> str:
        lat, lon = lat_lon(loc)
        folder = "train/satellite" if split == "train" else "test/query_satellite"
        return f"{prefix}{folder}/{loc}/H80.tif E{lon:.8f} N{lat:.8f} 80.00\n"

    (root / denseuav.GPS_TRAIN).write_text("".join(line("train", p) for p in TRAIN))
    (root / denseuav.GPS_TEST).write_text("".join(line("test", p) for p in TEST))
    (root / denseuav.GPS_ALL).write_text(
        (root / denseuav.GPS_TRAIN).read_text() + (root / denseuav.GPS_TEST).read_text()
    )
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return denseuav_tree(tmp_path / "DenseUAV")


def test_readers_heights_and_pairs(tree):
    split = denseuav.read_train(tree)
    assert len(split.drone) == 6 * 3 and len(split.satellite) == 6 * 6
    assert {r.altitude for r in split.drone} == {80, 90, 100}
    low = denseuav.read_train(tree, denseuav.parse_heights([80, 100]))
    assert {r.path.name for r in low.drone} == {"H80.JPG", "H100.JPG"} and len(low.satellite) == 36
    pairs = denseuav.train_pairs(split)
    assert all(d.stem == s.stem and d.parent.name == s.parent.name for d, s, _ in pairs)  # H80.JPG <-> H80.tif
    assert len(denseuav.read_test(tree, "gallery_satellite")) == 9 * 6
    assert len(denseuav.read_test(tree, "query_drone", (90,))) == 3
    with pytest.raises(DatasetLayoutError, match=r"dataset.heights=120: expected some of \[80, 90, 100\]"):
        denseuav.parse_heights(120)


@pytest.mark.parametrize("absolute", [False, True])
def test_gps_lines_put_the_longitude_first(tmp_path, absolute):
    root = denseuav_tree(tmp_path / "d", absolute_paths=absolute)
    gps = denseuav.read_place_gps(root)
    assert set(gps) == set(TRAIN + TEST)
    assert (gps["000007"].lat, gps["000007"].lon) == pytest.approx(lat_lon("000007"))
    (root / denseuav.GPS_ALL).unlink()  # the train and test files together stand in for ALL
    assert denseuav.read_place_gps(root) == gps


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("train/satellite/000001/H80.tif E120.1 N30.2", "expected '<path>/<place id>/H80.tif E<lon> N<lat> <height>'"),
        ("train/satellite/000001/H80.tif N30.2 E120.1 80", "expected the longitude as E<degrees>, got 'N30.2'"),
        ("train/satellite/000001/H80.tif E12o.1 N30.2 80", "the longitude 'E12o.1' is not a finite number"),
        ("train/satellite/000001/H80.tif E120.1 N30.2 high", "the height 'high' is not a finite number"),
        # numbers that parse but are no position: NaN, infinities, a negative height
        ("train/satellite/000001/H80.tif Enan N30.2 80", "the longitude 'Enan' is not a finite number"),
        ("train/satellite/000001/H80.tif E120.1 Ninf 80", "the latitude 'Ninf' is not a finite number"),
        ("train/satellite/000001/H80.tif E120.1 N30.2 nan", "the height 'nan' is not a finite number"),
        ("train/satellite/000001/H80.tif E120.1 N30.2 -80", "the height '-80' is not a finite number"),
        ("train/satellite/000001/H80.tif E120.1 N95.0 80", "is not a position"),
        ("H80.tif E120.1 N30.2 80", "names no place folder"),
    ],
)
def test_a_malformed_gps_line_is_one_line_naming_file_and_line(tree, line, says):
    gps = tree / denseuav.GPS_ALL
    lines = gps.read_text().splitlines()
    lines[3] = line
    gps.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetLayoutError) as exc:
        denseuav.read_place_gps(tree)
    message = str(exc.value)
    assert message.startswith(f"{gps}:4: ") and says in message and "\n" not in message


def test_metrics_against_hand_computed_values():
    # one query at (30, 120); its ranking: the same point, then 1e-4 and 2e-4 degrees north
    query = torch.tensor([[30.0, 120.0]], dtype=torch.float64)
    gallery = torch.tensor([[30.0, 120.0], [30.0001, 120.0], [30.0002, 120.0]], dtype=torch.float64)
    found = denseuav_metrics(torch.tensor([[1, 0, 2]]), query, gallery, ks=(1, 3), thresholds_m=(10, 12))
    # SDM@1 = exp(-5000 * 1e-4); SDM@3 = (3 e^-0.5 + 2 e^0 + 1 e^-1) / 6
    assert found["DenseUAV_SDM@1"] == pytest.approx(100 * math.exp(-0.5))
    assert found["DenseUAV_SDM@3"] == pytest.approx(100 * (3 * math.exp(-0.5) + 2 + math.exp(-1)) / 6)
    # top-1 is 1e-4 degrees of latitude away: 6378137 * 1e-4 * pi / 180 = 11.13 m
    assert found["DenseUAV_MA@10m"] == 0.0 and found["DenseUAV_MA@12m"] == 100.0
    # the distances are plain degrees: a longitude step counts as a latitude step (no cos(lat))
    east = torch.tensor([[30.0, 120.0001]], dtype=torch.float64)
    assert denseuav_metrics(torch.tensor([[0]]), query, east, ks=(1,))["DenseUAV_SDM@1"] == pytest.approx(
        100 * math.exp(-0.5)
    )


def test_count_and_structure_rules(tree):
    counts = {c.group: c for c in count("denseuav", tree)}
    assert counts["train/drone"].images == 18 and counts["test/gallery_satellite"].places == 9
    assert all(not c.odd_places for c in counts.values())  # 3 photos and 6 tiles a place everywhere
    assert extra_checks("denseuav", str(tree)) == []
    # an incomplete copy: a training place missing from the satellite gallery, a place without GPS
    for tile in (tree / "test" / "gallery_satellite" / "000002").iterdir():
        tile.unlink()
    (tree / "test" / "gallery_satellite" / "000002").rmdir()
    lines = (tree / denseuav.GPS_ALL).read_text().splitlines()
    (tree / denseuav.GPS_ALL).write_text("\n".join(line for line in lines if "/000007/" not in line) + "\n")
    found = extra_checks("denseuav", str(tree))
    assert found == [
        "test/gallery_satellite: no place 000002 (a training place; the galleries hold every place)",
        f"{denseuav.GPS_ALL}: no place 000007 (every place has a GPS line)",
    ]


def test_check_names_the_missing_place_and_a_bad_gps_line(tree, tmp_path):
    (tree / "train" / "drone" / "000004" / "H90.JPG").unlink()
    out = run_module(["-m", "mean_geo.check", "dataset=denseuav", f"dataset.root={tree}"], cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "train/drone: place 000004 has 2 images, official 3" in out.stderr
    (tree / denseuav.GPS_ALL).write_text("train/satellite/000000/H80.tif E120.1\n")
    out = run_module(["-m", "mean_geo.check", "dataset=denseuav", f"dataset.root={tree}"], cwd=tmp_path)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and f"{tree / denseuav.GPS_ALL}:1:" in errors[0], out.stderr


@pytest.mark.slow
def test_a_miniature_copy_trains_and_evaluates_with_its_own_metrics(tree, tmp_path):
    out = train_tiny("denseuav", tree, tmp_path, "dataset.batch_size=4")
    assert out.returncode == 0, out.stderr[-3000:]
    (metrics_file,) = (tmp_path / "logs").rglob("metrics.json")
    payload = json.loads(metrics_file.read_text())
    metrics = payload["metrics"]
    for key in ("DenseUAV_SDM@1", "DenseUAV_SDM@3", "DenseUAV_SDM@5", "DenseUAV_SDM@10", "DenseUAV_MA@20m"):
        assert 0 <= metrics[f"test/d2s/{key}"] <= 100
    assert "test/d2s/Dis@1" in metrics and "test/d2s/SDM@1" in metrics  # our metres metrics beside them
    directions = payload["protocol"]["fingerprint"]["directions"]
    # DenseUAV's protocol: the whole gallery ranked, training places included
    assert directions["d2s"] == {**directions["d2s"], "queries": 9, "gallery": 54, "ranked_gallery": 54}
    assert directions["s2d"]["queries"] == 18 and directions["s2d"]["ranked_gallery"] == 27
    assert "DenseUAV_SDM@K" in payload["protocol"]["fingerprint"]["metric_definitions"]
    (ckpt,) = (tmp_path / "logs").rglob("last.ckpt") or (tmp_path / "logs").rglob("epoch_*.ckpt")
    # mean_geo.eval rebuilds DenseUAV from the checkpoint, with its protocol and metrics
    out = run_module(["-m", "mean_geo.eval", f"ckpt={ckpt}", "eval.plots=false", "hydra.run.dir=eval_run"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval_run" / "metrics.json").read_text())
    assert evaluated["protocol"]["fingerprint"]["drop_unmatched_gallery"] is False
    assert evaluated["metrics"]["test/d2s/DenseUAV_SDM@1"] == pytest.approx(
        metrics["test/d2s/DenseUAV_SDM@1"], abs=1e-3
    )
    # index the satellite gallery and localize the query photos with the GPS file as coordinates
    gps, gallery = tree / denseuav.GPS_ALL, tree / "test" / "gallery_satellite"
    index_args = ["-m", "mean_geo.index", f"gallery_dir={gallery}", f"ckpt={ckpt}", "out=tiles.index"]
    out = run_module([*index_args, f"coords_csv={gps}", "hardware=cpu"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    photos = tree / "test" / "query_drone"
    localize = ["-m", "mean_geo.localize", str(photos), "--index", "tiles.index", "--ckpt", str(ckpt), "--k", "3"]
    out = run_module([*localize, "--coords-csv", str(gps), "--json"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout)
    assert len(found) == 9
    for photo in found:  # every match located by its place's GPS line, with its metres to the truth
        for match in photo["matches"]:
            lat, lon = lat_lon(Path(match["path"]).parent.name)
            assert (match["lat"], match["lon"]) == pytest.approx((lat, lon))
            truth = lat_lon(Path(photo["photo"]).parent.name)
            assert match["distance_m"] is not None and (match["distance_m"] == 0) == (truth == (lat, lon))


def test_the_synthetic_world_is_read_as_the_release(tmp_path):
    from mean_geo.data.coordinates import read_coordinates_csv
    from mean_geo.synthetic.writer import WorldSpec, write_world

    spec = WorldSpec("denseuav", locations=8, image_size=32, test_locations=3, altitudes=denseuav.HEIGHTS)
    root = write_world(spec, tmp_path / "world", workers=1, progress=False)
    split = denseuav.read_train(root)
    assert len(split.locations) == 5 and split.locations[0] == "000000"  # 6-digit ids, training first
    assert len(denseuav.read_test(root, "query_drone")) == 3 * 3
    assert len(denseuav.read_test(root, "gallery_satellite")) == 8 * 6
    counts = {c.group: c for c in count("denseuav", root)}
    assert all(not c.odd_places for c in counts.values())  # 3 photos and 6 tiles a place
    assert extra_checks("denseuav", str(root)) == []  # galleries with every place, a GPS line each
    _, places = read_coordinates_csv(root / "coordinates.csv")
    gps = denseuav.read_place_gps(root)
    assert set(gps) == set(places)
    assert all((gps[p].lat, gps[p].lon) == pytest.approx(places[p], abs=1e-7) for p in places)
    # dense places: neighbours tens of metres apart, as DenseUAV's
    from mean_geo.retrieval.distances import haversine_m

    a, b = torch.tensor(places["000000"]), torch.tensor(places["000001"])
    assert 20 < float(haversine_m(a, b)) < 60
