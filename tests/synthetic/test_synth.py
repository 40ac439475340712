import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mean_geo.errors import MeanGeoError
from mean_geo.synth import main as synth_main
from mean_geo.synthetic import writer
from mean_geo.synthetic.render import DroneCamera, cast_shadows, render_drone, render_satellite
from mean_geo.synthetic.world import generate_place
from mean_geo.synthetic.writer import WorldSpec, write_world
from tests.helpers.cli import exit_code


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


TINY = dict(locations=3, image_size=48, drone_per_location=2)


@pytest.mark.parametrize("layout", ["sues200", "university1652"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, layout):
    a = write_world(WorldSpec(layout, seed=5, **TINY), tmp_path / "a", workers=2, progress=False)
    b = write_world(WorldSpec(layout, seed=5, **TINY), tmp_path / "b", workers=1, progress=False)
    c = write_world(WorldSpec(layout, seed=6, **TINY), tmp_path / "c", workers=1, progress=False)
    da, db, dc = tree_digest(a), tree_digest(b), tree_digest(c)
    assert da == db  # byte for byte, whatever the number of worker processes
    assert set(da) == set(dc)  # same layout ...
    images = [k for k in da if not k.endswith("world.json")]
    assert sum(da[k] != dc[k] for k in images) == len(images)  # ... but every image differs


def test_sues200_tree_has_the_real_relationships(sues_world):
    spec = WorldSpec("sues200", locations=10, seed=0, image_size=64, drone_per_location=3)
    ids = writer.split_ids(spec)
    assert len(ids["train"]) == 6 and len(ids["test"]) == 4  # 120/80 of 200, scaled
    for alt in (150, 200, 250, 300):
        train = sues_world / "Training" / str(alt)
        test = sues_world / "Testing" / str(alt)
        assert sorted(p.name for p in (train / "drone").iterdir()) == ids["train"]
        assert sorted(p.name for p in (train / "satellite").iterdir()) == ids["train"]
        assert sorted(p.name for p in (test / "query_drone").iterdir()) == ids["test"]
        assert sorted(p.name for p in (test / "query_satellite").iterdir()) == ids["test"]
        everyone = sorted(ids["train"] + ids["test"])
        assert sorted(p.name for p in (test / "gallery_satellite").iterdir()) == everyone
        assert sorted(p.name for p in (test / "gallery_drone").iterdir()) == everyone
        assert len(list((test / "query_drone" / ids["test"][0]).iterdir())) == 3


def test_u1652_tree_has_distractors_in_the_galleries(u1652_world):
    test = u1652_world / "test"
    query = {p.name for p in (test / "query_drone").iterdir()}
    gallery = {p.name for p in (test / "gallery_satellite").iterdir()}
    train = {p.name for p in (u1652_world / "train" / "satellite").iterdir()}
    assert len(train) == 6 and len(query) == 6 and not train & query
    assert query < gallery and len(gallery - query) == 2  # round(6 * 250 / 701)
    assert {p.name for p in (test / "gallery_drone").iterdir()} == gallery
    assert sorted(p.name for p in (u1652_world / "train" / "drone" / "0001").iterdir())[0] == "image-01.jpeg"


def test_drone_view_is_a_real_perspective_not_the_tile():
    place = generate_place(0, 1)
    shade = cast_shadows(place, 1.0, 45)
    sat = render_satellite(place, shade, 96, 200).astype(float)
    rng = np.random.default_rng(0)
    low = render_drone(place, shade, DroneCamera(0.3, 150), 96, rng).astype(float)
    high = render_drone(place, shade, DroneCamera(0.3, 300), 96, rng).astype(float)
    assert np.abs(low - sat).mean() > 20  # oblique view, not a noisy copy of the tile
    assert np.abs(low - high).mean() > 10  # altitude changes the footprint
    # a tall building leans with the viewing direction: two azimuths give different images
    other = render_drone(place, shade, DroneCamera(0.3 + np.pi, 150), 96, np.random.default_rng(0)).astype(float)
    assert np.abs(low - other).mean() > 10


def test_places_differ_between_locations():
    a, b = generate_place(0, 1), generate_place(0, 2)
    assert not np.array_equal(a.height, b.height)
    assert a.max_height > 6  # buildings exist


def test_existing_world_is_reused_and_foreign_folders_are_refused(tmp_path):
    spec = WorldSpec("sues200", **TINY)
    root = write_world(spec, tmp_path / "w", workers=1, progress=False)
    before = tree_digest(root)
    assert write_world(spec, root, workers=1, progress=False) == root  # no-op
    assert tree_digest(root) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(MeanGeoError, match="not this synthetic world"):
        write_world(spec, mine, workers=1, progress=False)
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    with pytest.raises(MeanGeoError, match="not this synthetic world"):
        write_world(WorldSpec("sues200", seed=1, **TINY), root, workers=1, progress=False)
    assert tree_digest(root) == before


def test_world_json_from_before_a_new_field_still_names_the_same_world(tmp_path):
    spec = WorldSpec("sues200", **TINY)
    root = write_world(spec, tmp_path / "w", workers=1, progress=False)
    marker = root / "world.json"
    recorded = json.loads(marker.read_text())
    del recorded["satellite_side_m"]  # written by an earlier version
    marker.write_text(json.dumps(recorded))
    assert write_world(spec, root, workers=1, progress=False) == root
    with pytest.raises(MeanGeoError, match="not this synthetic world"):
        write_world(WorldSpec("sues200", satellite_side_m=300.0, **TINY), root, workers=1, progress=False)


def test_satellite_side_sets_the_tile_footprint():
    place = generate_place(0, 3)
    shade = np.ones_like(place.height)
    near, wide = render_satellite(place, shade, 64, 150.0), render_satellite(place, shade, 64, 300.0)
    # the wide tile's centre half is the near tile's view of the same ground, at half resolution
    centre = wide[16:48, 16:48].astype(np.float32)
    shrunk = np.asarray(Image.fromarray(near).resize((32, 32), Image.BILINEAR), dtype=np.float32)
    other = np.asarray(Image.fromarray(near).rotate(90).resize((32, 32), Image.BILINEAR), dtype=np.float32)
    assert np.abs(centre - shrunk).mean() < 0.5 * np.abs(centre - other).mean()
    with pytest.raises(MeanGeoError, match="satellite_side_m"):
        WorldSpec("sues200", satellite_side_m=700.0)


def test_test_locations_fixes_the_held_out_places_and_keeps_the_rest_for_training(tmp_path):
    spec = WorldSpec("sues200", locations=9, test_locations=2, image_size=40, drone_per_location=1, altitudes=(150,))
    ids = writer.split_ids(spec)
    assert len(ids["train"]) == 7 and len(ids["test"]) == 2
    assert sorted(ids["train"] + ids["test"]) == [f"{i:04d}" for i in range(1, 10)]
    # the split is the same fixed permutation as the default one, only cut elsewhere
    default = writer.split_ids(WorldSpec("sues200", locations=9, altitudes=(150,)))
    assert set(ids["test"]) <= set(default["test"])
    root = write_world(spec, tmp_path / "w", workers=1, progress=False)
    assert sorted(p.name for p in (root / "Testing" / "150" / "query_drone").iterdir()) == ids["test"]
    assert sorted(p.name for p in (root / "Training" / "150" / "drone").iterdir()) == ids["train"]
    u = writer.split_ids(WorldSpec("university1652", locations=5, test_locations=3))
    assert (len(u["train"]), len(u["test"]), len(u["distractor"])) == (5, 3, 1)
    assert not set(u["train"]) & set(u["test"]) and not set(u["test"]) & set(u["distractor"])
    for bad in (0, 9):
        with pytest.raises(MeanGeoError, match="test_locations"):
            WorldSpec("sues200", locations=9, test_locations=bad)
    assert exit_code(synth_main, ["--out", str(tmp_path / "bad"), "--locations", "4", "--test-locations", "4"]) == 2


def test_supersampled_drone_photos_are_closer_to_a_fine_render_than_plain_ones():
    place = generate_place(0, 2)
    shade = cast_shadows(place, 1.0, 45.0)
    cam = DroneCamera(azimuth=0.7, altitude=200.0)

    def photo(supersample: int) -> np.ndarray:
        # the same seed gives the same exposure and haze: only the sensor noise differs
        spec = WorldSpec("sues200", image_size=48, supersample=supersample)
        return writer._drone_photo(spec, place, shade, cam, np.random.default_rng(5)).astype(np.float32)

    fine = render_drone(place, shade, cam, 48 * 4, np.random.default_rng(5))
    fine = np.asarray(Image.fromarray(fine).reduce(4), dtype=np.float32)
    plain, smooth = photo(1), photo(3)
    assert plain.shape == smooth.shape == (48, 48, 3)
    assert np.abs(smooth - fine).mean() < 0.7 * np.abs(plain - fine).mean()
    with pytest.raises(MeanGeoError, match="supersample"):
        WorldSpec("sues200", supersample=5)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = writer.render_location

    def flaky(spec, index):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(spec, index)

    monkeypatch.setattr(writer, "render_location", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_world(WorldSpec("sues200", **TINY), tmp_path / "w", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_images_and_reports_errors_in_one_line(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        synth_main(
            [
                "--layout",
                "university1652",
                "--out",
                str(out),
                "--locations",
                "2",
                "--size",
                "40",
                "--drone-per-location",
                "1",
                "--quiet",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    img = Image.open(next((out / "train" / "drone").rglob("*.jpeg")))
    assert img.size == (40, 40) and img.mode == "RGB"
    assert exit_code(synth_main, ["--out", str(tmp_path), "--quiet"]) == 2  # tmp_path is not empty
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(tmp_path) in err
