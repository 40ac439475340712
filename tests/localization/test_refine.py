"""Refinement: photos cut from georeferenced tiles through homographies we choose, so every true
position is known by construction; verification, acceptance and its reasons; localize --refine
end to end (features stored in the index or not); a learned matcher from a local weights file."""

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from mean_geo import localize as loc
from mean_geo.index import build_index
from mean_geo.inference.geo import haversine_m, raster_geometry
from mean_geo.localization.geometry import TileGeometry
from mean_geo.localization.matching import build_matcher
from mean_geo.localization.refine import RefineSettings, _homography_problem, verify
from mean_geo.retrieval.index_store import read_index
from mean_geo.synthetic.flights import FlightSpec, write_flights_world
from tests.helpers.cli import exit_code, without_stale_logging
from tests.inference.test_localize import trainer

TILES = ("r002_c002", "r002_c004", "r004_c002", "r004_c004")


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """Four 256-px tiles of a synthetic map, with their world files."""
    world = write_flights_world(
        FlightSpec(flights=1, frames=2, image_size=256, map_m=1000.0), tmp_path_factory.mktemp("w") / "world"
    )
    folder = tmp_path_factory.mktemp("tiles")
    for name in TILES:
        for suffix in (".png", ".pgw"):
            shutil.copy(world / "tiles" / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder


def homography(angle_deg: float, scale: float, shift: tuple[float, float], tilt=(2e-4, -1e-4)) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array(
        [
            [scale * np.cos(a), -scale * np.sin(a), shift[0]],
            [scale * np.sin(a), scale * np.cos(a), shift[1]],
            [tilt[0], tilt[1], 1.0],
        ]
    )


def cut_photo(tile: np.ndarray, h: np.ndarray, size=(192, 144)) -> np.ndarray:
    """The photo whose pixel ``p`` shows tile pixel ``h · p``."""
    return cv2.warpPerspective(tile, np.linalg.inv(h), size, flags=cv2.INTER_LINEAR)


def true_position(tiles, name: str, h: np.ndarray, size=(192, 144)) -> tuple[float, float]:
    centre = h @ np.array([(size[0] - 1) / 2, (size[1] - 1) / 2, 1.0])
    return raster_geometry(tiles / f"{name}.png").to_latlon(centre[0] / centre[2], centre[1] / centre[2])


CASES = {
    "r002_c002": homography(25, 0.9, (70, 40)),
    "r002_c004": homography(-60, 1.1, (110, 150)),
    "r004_c002": homography(170, 0.8, (200, 100), tilt=(-3e-4, 2e-4)),
    "r004_c004": homography(5, 1.2, (30, 60)),
}


@pytest.mark.parametrize("matcher", ["sift", "orb"])
def test_verification_recovers_the_homography(tiles, matcher):
    m = build_matcher(matcher)
    for name, h in CASES.items():
        tile = np.asarray(Image.open(tiles / f"{name}.png").convert("RGB"))
        v = verify(m.features(cut_photo(tile, h)), m.features(tile), m, RefineSettings())
        assert v.accepted, (name, v.reason)
        expected = h @ np.array([95.5, 71.5, 1.0])
        assert np.hypot(*(np.array(v.centre_px) - expected[:2] / expected[2])) < 1.5


def test_refusals_say_why(tiles):
    m = build_matcher("sift")
    tile = np.asarray(Image.open(tiles / "r002_c002.png").convert("RGB"))
    other = np.asarray(Image.open(tiles / "r004_c004.png").convert("RGB"))
    settings = RefineSettings()
    tf = m.features(tile)
    flat = m.features(np.full((144, 192, 3), 128, np.uint8))
    assert verify(flat, tf, m, settings).reason == "0 matches, fewer than 15"
    tiny = m.features(tile[:6, :6])
    assert not verify(tiny, tf, m, settings).accepted
    mirrored = cut_photo(tile, homography(0, 1.0, (60, 60), tilt=(0, 0)))[:, ::-1]
    assert not verify(m.features(np.ascontiguousarray(mirrored)), tf, m, settings).accepted
    wrong = verify(m.features(cut_photo(other, CASES["r004_c004"])), tf, m, settings)
    assert not wrong.accepted and wrong.reason != "accepted"
    # outside: a photo cut mostly beside the tile (its centre beyond the right edge)
    shifted = cut_photo(tile, homography(0, 1.0, (200, 50), tilt=(0, 0)))
    outside = verify(m.features(shifted), tf, m, RefineSettings(min_inliers=8))
    assert not outside.accepted


def test_implausible_homographies_are_named():
    settings, size = RefineSettings(), (192, 144)
    assert _homography_problem(homography(30, 1.0, (10, 10)), size, settings) is None
    assert "mirrors" in _homography_problem(np.diag([-1.0, 1.0, 1.0]), size, settings)
    assert "shears" in _homography_problem(np.diag([5.0, 0.5, 1.0]), size, settings)
    assert "scales the photo by 20" in _homography_problem(np.diag([20.0, 20.0, 1.0]), size, settings)
    assert "horizon" in _homography_problem(homography(0, 1.0, (0, 0), tilt=(0, -0.01)), size, settings)


def test_geometry_of_a_resized_tile_is_the_same_ground():
    g = TileGeometry(1e-5, 0.0, 0.0, -1e-5, 121.0, 31.0)
    half = g.resized(0.5, 0.5)
    # pixel centre 0 of the half-size tile covers original pixels 0 and 1: their midpoint 0.5
    assert half.to_latlon(0, 0) == pytest.approx(g.to_latlon(0.5, 0.5))
    assert half.to_latlon(99.5, 49.5) == pytest.approx(g.to_latlon(199.5, 99.5))


@pytest.fixture(scope="module")
def indexes(smoke_run, tiles, tmp_path_factory):
    out, _, _ = smoke_run
    ckpt = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    folder = tmp_path_factory.mktemp("idx")
    plain, stored = folder / "plain.index", folder / "stored.index"
    build_index(tiles, ckpt, plain, trainer(), batch_size=4, num_workers=0)
    build_index(tiles, ckpt, stored, trainer(), batch_size=4, num_workers=0, features="sift")
    photos = tmp_path_factory.mktemp("photos")
    for name, h in CASES.items():
        tile = np.asarray(Image.open(tiles / f"{name}.png").convert("RGB"))
        Image.fromarray(cut_photo(tile, h)).save(photos / f"photo_of_{name}.png")
    return ckpt, plain, stored, photos


def refined_rows(capsys, *args) -> list[dict]:
    code = exit_code(loc.main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_localize_refine_gives_positions_known_by_construction(tiles, indexes, tmp_path, capsys):
    ckpt, plain, stored, photos = indexes
    assert read_index(plain).tiles[0]["geometry"] is not None and read_index(plain).features is None
    assert read_index(stored).features is not None and read_index(stored).features.matcher == "sift"
    answers = {}
    for index in (plain, stored):
        rows = refined_rows(
            capsys,
            photos,
            "--index",
            index,
            "--ckpt",
            ckpt,
            "--refine",
            "--top-n",
            "4",
            "--json",
            "--out",
            tmp_path / index.stem,
        )
        for row in rows:
            name = row["photo"].rsplit("photo_of_", 1)[1].removesuffix(".png")
            refined = row["refined"]
            assert refined["refined"] is True and refined["reason"] == "accepted" and refined["tile"] == name
            assert refined["inliers"] >= 15 and refined["reranked"][0] == refined["rank"]
            error_m = haversine_m(true_position(tiles, name, CASES[name]), (refined["lat"], refined["lon"]))
            assert error_m < 2.0, (name, error_m)  # 0.78 m a tile pixel
            answers.setdefault(name, []).append((refined["lat"], refined["lon"]))
        assert len(list((tmp_path / index.stem).glob("*_matches.png"))) == len(CASES)
    for name, (a, b) in answers.items():  # stored features give the same answer as computed ones
        assert haversine_m(a, b) < 0.5, name


def test_localize_refine_refuses_tiles_without_geometry_in_one_line(indexes, tmp_path, capsys):
    ckpt, _, _, photos = indexes
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in sorted(photos.glob("*.png"))[:2]:
        shutil.copy(p, bare / p.name)
    index = tmp_path / "bare.index"
    build_index(bare, ckpt, index, trainer(), batch_size=4, num_workers=0)
    code = exit_code(
        loc.main, [str(photos), "--index", str(index), "--ckpt", ckpt, "--refine", "--out", str(tmp_path / "o")]
    )
    err = without_stale_logging(capsys.readouterr().err)
    assert code == 2 and "has no ground geometry" in err and "Traceback" not in err
    for option, value in (
        ("--matcher-weights", "w.pt"),
        ("--top-n", "3"),
        ("--matcher", "orb"),
        ("--min-inliers", "9"),
    ):
        code = exit_code(loc.main, [str(photos), "--index", str(index), "--ckpt", ckpt, option, value])
        assert code == 2 and f"{option}: a refinement option; add --refine" in capsys.readouterr().err


def test_a_learned_matcher_loads_from_a_local_file_and_refines(tiles, indexes, tmp_path, capsys):
    kf = pytest.importorskip("kornia.feature")
    from safetensors.torch import save_file

    ckpt, plain, _, photos = indexes
    weights = tmp_path / "loftr.safetensors"
    save_file({k: v.contiguous() for k, v in kf.LoFTR(pretrained=None).state_dict().items()}, str(weights))
    rows = refined_rows(
        capsys,
        sorted(photos.glob("*.png"))[0],
        "--index",
        plain,
        "--ckpt",
        ckpt,
        "--refine",
        "--top-n",
        "2",
        "--matcher",
        "loftr",
        "--matcher-weights",
        weights,
        "--json",
        "--out",
        tmp_path / "o",
    )
    refined = rows[0]["refined"]
    # untrained weights match nothing useful: a refusal with its reason, the top-1's centre kept
    assert refined["refined"] in (True, False) and refined["reason"]
    if not refined["refined"]:
        assert (refined["lat"], refined["lon"]) == (rows[0]["matches"][0]["lat"], rows[0]["matches"][0]["lon"])
    base = [
        str(photos),
        "--index",
        str(plain),
        "--ckpt",
        ckpt,
        "--refine",
        "--matcher",
        "loftr",
        "--out",
        str(tmp_path / "o"),
    ]
    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": __import__("torch").zeros(3, 3)}, str(other))
    assert exit_code(loc.main, [*base, "--matcher-weights", str(other)]) == 2
    assert "not LoFTR's weights" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a weights file")
    assert exit_code(loc.main, [*base, "--matcher-weights", str(corrupt)]) == 2
    assert "not a readable weights file" in capsys.readouterr().err
    assert exit_code(loc.main, base) == 2
    assert "--matcher-weights" in capsys.readouterr().err
