"""Synthetic flights (geometry, truth, video) and the decoders on them with a retrieval of known
quality: tracks against the per-frame top-1, in metres."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mean_geo.errors import MeanGeoError
from mean_geo.inference.flight import decode_flight, flight_metrics
from mean_geo.inference.geo import haversine_m, locate_tiles
from mean_geo.inference.simulated_retrieval import simulated_matches
from mean_geo.localization.sequence import order_frames, read_video
from mean_geo.localization.track import MotionModel, tile_spacing_m
from mean_geo.localization.track_metrics import error_metrics, frames_to_reacquire
from mean_geo.synthetic.flights import FlightSpec, latlon, write_flights_world

SPEC = FlightSpec(flights=2, frames=100, fps=1.0, speed_mps=12.0, image_size=64, map_m=1800.0, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_flights_world(SPEC, tmp_path_factory.mktemp("flights") / "world")


def read_truth(folder: Path) -> dict[str, tuple[float, float]]:
    with (folder / "truth.csv").open() as fh:
        return {row["path"]: (float(row["lat"]), float(row["lon"])) for row in csv.DictReader(fh)}


def test_the_world_is_complete_georeferenced_and_repeatable(world, tmp_path):
    tiles = sorted((world / "tiles").glob("*.png"))
    stride = SPEC.tile_m * (1 - SPEC.overlap)
    per_side = int((SPEC.map_m - SPEC.tile_m) / stride) + 1
    assert len(tiles) == per_side**2
    # a tile's world file puts its centre where the map's geometry does
    centres = locate_tiles(tiles, world / "tiles")
    row, col = 3, 5
    expected = latlon(col * stride + SPEC.tile_m / 2, row * stride + SPEC.tile_m / 2, SPEC.map_m)
    got = centres[tiles.index(world / "tiles" / f"r{row:03d}_c{col:03d}.png")]
    assert got == pytest.approx((float(expected[0]), float(expected[1])), abs=1e-9)
    for flight in ("flight00", "flight01"):
        frames = sorted((world / "flights" / flight / "frames").glob("*.png"))
        assert len(frames) == SPEC.frames and (world / "flights" / flight / f"{flight}.mp4").is_file()
        truth = read_truth(world / "flights" / flight)
        points = [truth[f.name] for f in frames]
        steps = [haversine_m(a, b) for a, b in zip(points, points[1:], strict=False)]
        assert np.allclose(steps, SPEC.speed_mps / SPEC.fps, rtol=1e-3)  # constant ground speed
        for f in frames:
            assert Image.open(f).size == (64, 48)
    # the same spec again is a no-op; another spec into the same folder is refused
    before = (world / "world.json").stat().st_mtime_ns
    assert write_flights_world(SPEC, world) == world and (world / "world.json").stat().st_mtime_ns == before
    with pytest.raises(MeanGeoError, match="not this synthetic world"):
        write_flights_world(FlightSpec(frames=5, map_m=1800.0), world)


def test_a_nadir_frame_shows_the_map_at_its_true_position(world):
    """The frame's centre patch is the tile's patch at the true point (world file inverted)."""
    folder = world / "flights" / "flight00"
    truth = read_truth(folder)
    frame_path = sorted((folder / "frames").glob("*.png"))[17]
    lat, lon = truth[frame_path.name]
    tiles = sorted((world / "tiles").glob("*.png"))
    centres = np.array(locate_tiles(tiles, world / "tiles"))
    nearest = tiles[int(np.argmin([haversine_m((lat, lon), tuple(c)) for c in centres]))]
    a, _, _, e, c, f = (float(v) for v in nearest.with_suffix(".pgw").read_text().split())
    col, row = (lon - c) / a, (lat - f) / e
    tile = np.asarray(Image.open(nearest), dtype=np.float32)
    frame = np.asarray(Image.open(frame_path), dtype=np.float32)
    # the frame sees 2·120·tan(37°) ≈ 181 m across 64 px, the tile 200 m: about the same scale
    patch_t = tile[int(round(row)) - 2 : int(round(row)) + 3, int(round(col)) - 2 : int(round(col)) + 3].mean((0, 1))
    patch_f = frame[24 - 2 : 24 + 3, 32 - 2 : 32 + 3].mean((0, 1))
    far = tile[2:7, 2:7].mean((0, 1)) if abs(row - 4) > 20 else tile[-7:-2, -7:-2].mean((0, 1))
    assert np.abs(patch_t - patch_f).mean() < 25, (patch_t, patch_f)
    assert np.abs(patch_t - patch_f).mean() <= np.abs(far - patch_f).mean() + 1e-6 or np.abs(far - patch_t).mean() < 25


def test_the_video_holds_the_frames_with_their_names_and_times(world, tmp_path):
    folder = world / "flights" / "flight01"
    frames = read_video(folder / "flight01.mp4", tmp_path / "video")
    files = sorted((folder / "frames").glob("*.png"))
    assert [f.path.name for f in frames] == [p.name for p in files]
    assert [f.time_s for f in frames] == pytest.approx([i / SPEC.fps for i in range(SPEC.frames)])
    ordered = order_frames(files[::-1])  # times from the names
    assert [f.path for f in ordered] == files
    a = np.asarray(Image.open(files[10]), dtype=np.float32)
    b = np.asarray(Image.open(frames[10].path), dtype=np.float32)
    assert np.abs(a - b).mean() < 12  # MPEG-4 is lossy; the frame is the same picture
    sampled = read_video(folder / "flight01.mp4", tmp_path / "sampled", sample_fps=0.25)
    assert [f.time_s for f in sampled] == pytest.approx([4.0 * i for i in range(25)])


def motion(tiles: np.ndarray) -> MotionModel:
    """The model as ``localize --track`` sets it up: σ from the gallery's tile spacing."""
    return MotionModel(position_sigma_m=tile_spacing_m(tiles))


def test_tile_spacing_is_the_grid_stride(world):
    tiles = np.array(locate_tiles(sorted((world / "tiles").glob("*.png")), world / "tiles"))
    assert tile_spacing_m(tiles) == pytest.approx(SPEC.tile_m * (1 - SPEC.overlap), rel=1e-3)


def flight_setup(world, flight):
    folder = world / "flights" / flight
    frames = order_frames(sorted((folder / "frames").glob("*.png")), frames_csv=folder / "frames.csv")
    truth = read_truth(folder)
    tiles = np.array(locate_tiles(sorted((world / "tiles").glob("*.png")), world / "tiles"))
    return frames, [truth[f.path.name] for f in frames], tiles


@pytest.mark.parametrize("flight", ["flight00", "flight01"])
def test_tracks_beat_the_per_frame_top1_when_it_is_right_half_the_time(world, flight):
    frames, truth, tiles = flight_setup(world, flight)
    rng = np.random.default_rng(7)
    matches = simulated_matches(truth, tiles, p_right=0.5, k=20, rng=rng)
    metrics = flight_metrics(decode_flight(frames, matches, motion(tiles)), truth)
    top1, online, offline = (metrics[f"test/flight_{m}/mean_m"] for m in ("top1", "online", "offline"))
    print(f"{flight}: mean error top-1 {top1:.0f} m, online {online:.0f} m, offline {offline:.0f} m")
    assert offline <= top1 / 2
    assert online < top1


@pytest.mark.parametrize("flight", ["flight00", "flight01"])
def test_a_right_top1_is_never_made_worse(world, flight):
    frames, truth, tiles = flight_setup(world, flight)
    matches = simulated_matches(truth, tiles, p_right=1.0, k=20, rng=np.random.default_rng(1))
    flight_track = decode_flight(frames, matches, motion(tiles))
    metrics = flight_metrics(flight_track, truth)
    shown = ", ".join(f"{m} {metrics[f'test/flight_{m}/mean_m']:.0f} m" for m in ("top1", "online", "offline"))
    print(f"{flight}, top-1 always right: mean error {shown}")
    for mode in ("online", "offline"):
        assert metrics[f"test/flight_{mode}/mean_m"] <= metrics["test/flight_top1/mean_m"] + 1e-9
        assert metrics[f"test/flight_{mode}/overrode"] == 0.0


def test_reacquisition_after_a_corrupted_stretch(world):
    frames, truth, tiles = flight_setup(world, "flight00")
    rng = np.random.default_rng(3)
    matches = simulated_matches(truth, tiles, p_right=0.7, k=20, rng=rng)
    # frames 40-59: the camera gives nothing (random tiles, the truth nowhere)
    matches[40:60] = simulated_matches([(31.0 + i * 1e-3, 121.0) for i in range(20)], tiles, p_right=0.0, k=20, rng=rng)
    for ms in matches[40:60]:
        for m in ms:
            m.score = 0.5
    metrics = flight_metrics(decode_flight(frames, matches, motion(tiles)), truth, corrupted=(40, 60))
    print({k: v for k, v in metrics.items() if "reacquire" in k})
    assert metrics["test/flight_online/reacquire_frames"] <= 3
    assert metrics["test/flight_offline/reacquire_frames"] <= 3


def test_error_metrics_by_hand():
    errors = [5.0, 15.0, 30.0, 60.0, 200.0]
    assert error_metrics(errors) == {
        "mean_m": 62.0,
        "median_m": 30.0,
        "Acc@20m": 40.0,
        "Acc@50m": 60.0,
        "Acc@100m": 80.0,
    }
    assert frames_to_reacquire([0, 300, 300, 300, 80, 40, 10], stretch_end=2) == 3
    assert frames_to_reacquire([0, 300, 20], stretch_end=2) == 0
    assert frames_to_reacquire([0, 300, 300], stretch_end=1) == 3  # never: frames left + 1


def test_frames_without_times_or_at_one_time_are_refused(tmp_path):
    for name in ("b.png", "a.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    with pytest.raises(MeanGeoError, match=r"a\.png: the frame has no time"):
        order_frames(sorted(tmp_path.glob("*.png")))
    ordered = order_frames(list(tmp_path.glob("*.png")), fps=2.0)
    assert [(f.path.name, f.time_s) for f in ordered] == [("a.png", 0.0), ("b.png", 0.5)]
    (tmp_path / "log.csv").write_text("path,time_s,course_deg\na.png,3,90\nb.png,3,\n")
    with pytest.raises(MeanGeoError, match="two frames at 3 s"):
        order_frames(list(tmp_path.glob("*.png")), frames_csv=tmp_path / "log.csv")
    (tmp_path / "log.csv").write_text("path,time_s,course_deg\na.png,3,90\nb.png,nan,\n")
    with pytest.raises(MeanGeoError, match=r"log\.csv:3: time_s 'nan'"):
        order_frames(list(tmp_path.glob("*.png")), frames_csv=tmp_path / "log.csv")
    (tmp_path / "log.csv").write_text("path,time_s,course_deg\na.png,3,90\n")
    with pytest.raises(MeanGeoError, match=r"no row for the frame .*b\.png"):
        order_frames(list(tmp_path.glob("*.png")), frames_csv=tmp_path / "log.csv")


def test_exif_times_order_camera_frames(tmp_path):
    stamps = {"DJI_0003.JPG": ("2026:05:01 10:00:02", "5"), "DJI_0001.JPG": ("2026:05:01 10:00:01", "75")}
    for name, (stamp, sub) in stamps.items():
        img = Image.new("RGB", (8, 8))
        exif = img.getexif()
        ifd = exif.get_ifd(0x8769)
        ifd[36867], ifd[37521] = stamp, sub
        img.save(tmp_path / name, exif=exif)
    frames = order_frames(sorted(tmp_path.glob("*.JPG"))[::-1])
    assert [f.path.name for f in frames] == ["DJI_0001.JPG", "DJI_0003.JPG"]
    assert frames[1].time_s - frames[0].time_s == pytest.approx(0.75)
    assert json.dumps([f.time_s for f in frames])  # plain floats
    assert math.isnan(frames[0].course_deg)
