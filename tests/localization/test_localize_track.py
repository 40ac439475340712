"""``python -m mean_geo.localize … --track`` as a user runs it: a synthetic flight's frames (and its
video) against an index of the map's tiles, with the smoke model; its files, JSON and metrics.json
(read back by the report), and its one-line refusals."""

import csv
import json

import pytest

from mean_geo import localize as loc
from mean_geo import report
from mean_geo.index import build_index
from mean_geo.reporting.runs import read_run
from mean_geo.synthetic.flights import FlightSpec, write_flights_world
from tests.helpers.cli import exit_code, without_stale_logging
from tests.inference.test_localize import trainer

SPEC = FlightSpec(flights=1, frames=12, fps=2.0, speed_mps=10.0, image_size=64, map_m=1000.0, tile_m=200.0, seed=5)


@pytest.fixture(scope="module")
def flight(smoke_run, tmp_path_factory):
    out, _, _ = smoke_run
    ckpt = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    world = write_flights_world(SPEC, tmp_path_factory.mktemp("flight") / "world")
    index = tmp_path_factory.mktemp("index") / "tiles.index"
    build_index(world / "tiles", ckpt, index, trainer(), batch_size=16, num_workers=0)
    return world, ckpt, index


def run(capsys, *args) -> tuple[int, str, str]:
    code = exit_code(loc.main, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_flight_is_localized_as_a_track_with_its_files_and_metrics(flight, tmp_path, capsys):
    world, ckpt, index = flight
    folder = world / "flights" / "flight00"
    out = tmp_path / "out"
    args = [folder / "frames", "--track", "--index", index, "--ckpt", ckpt, "--coords-csv", folder / "truth.csv"]
    code, stdout, err = run(capsys, *args, "--frames-csv", folder / "frames.csv", "--out", out, "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    frames = sorted((folder / "frames").glob("*.png"))
    assert [r["photo"] for r in rows] == [str(f) for f in frames]  # time order = name order here
    assert [r["time_s"] for r in rows] == pytest.approx([i / SPEC.fps for i in range(SPEC.frames)])
    for r in rows:
        assert len(r["matches"]) == 20 and r["matches"][0]["rank"] == 1  # --k defaults to 20 for a track
        track = r["track"]
        assert track["mode"] == "offline" and 0 < track["confidence"] <= 1
        chosen = r["matches"][track["rank"] - 1]
        assert (track["lat"], track["lon"], track["tile"]) == (chosen["lat"], chosen["lon"], chosen["id"])
        assert track["overrode_top1"] == (track["rank"] != 1)
        assert track["state"] in ("tracking", "lost", "reacquired")
        assert all(m["distance_m"] is not None for m in r["matches"])  # the truth CSV names every frame
    with (out / "track.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [t["frame"] for t in table] == [f.name for f in frames]
    assert [float(t["offline_lat"]) for t in table] == pytest.approx([r["track"]["lat"] for r in rows], abs=1e-7)
    assert all(t["true_lat"] for t in table)
    assert (out / "track.png").stat().st_size > 10_000 and len(list(out.glob("0*_*.png"))) == SPEC.frames
    run_result = read_run(out / "metrics.json")
    assert set(run_result.metrics) == {"flight_top1", "flight_online", "flight_offline"}
    assert set(run_result.metrics["flight_offline"]) >= {"mean_m", "median_m", "Acc@20m", "Acc@50m", "Acc@100m"}
    assert (
        run_result.fingerprint["synthetic"] is True and run_result.fingerprint["directions"]["flight"]["queries"] == 12
    )
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["protocol"]["motion"]["position_sigma_m"] == pytest.approx(100.0, rel=1e-3)  # the tile spacing
    # the report tables a flight under its own protocol, sorted by a metric it has
    code = report.main([str(out), "--out", str(tmp_path / "report.md")])
    assert code == 0
    text = (tmp_path / "report.md").read_text()
    assert "flight_offline" in text and "mean_m" in text


def test_the_video_gives_the_frames_track(flight, tmp_path, capsys):
    world, ckpt, index = flight
    folder = world / "flights" / "flight00"
    common = ["--track", "online", "--index", index, "--ckpt", ckpt, "--json"]
    code, stdout, err = run(capsys, folder / "flight00.mp4", *common, "--out", tmp_path / "video")
    assert code == 0, err
    rows = json.loads(stdout)
    assert [r["photo"].rsplit("/", 1)[1] for r in rows] == sorted(p.name for p in (folder / "frames").glob("*.png"))
    assert all(r["track"]["mode"] == "online" for r in rows)
    assert not (tmp_path / "video" / "metrics.json").exists()  # no truth given: no metres
    code, stdout, _ = run(capsys, folder / "frames", *common, "--out", tmp_path / "frames")
    from_frames = json.loads(stdout)
    same = sum(a["matches"][0]["id"] == b["matches"][0]["id"] for a, b in zip(rows, from_frames, strict=True))
    assert same >= len(rows) - 2  # MPEG-4 changes pixels, not (much) what they look like


def test_a_corrupted_stretch_is_measured(flight, tmp_path, capsys):
    world, ckpt, index = flight
    folder = world / "flights" / "flight00"
    args = [folder / "frames", "--track", "--index", index, "--ckpt", ckpt, "--coords-csv", folder / "truth.csv"]
    code, _, err = run(capsys, *args, "--corrupt-frames", "3:6", "--out", tmp_path / "c")
    assert code == 0, err
    payload = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert "test/flight_online/reacquire_frames" in payload["metrics"]
    assert payload["protocol"]["fingerprint"]["track"]["corrupted"] == [3, 6]
    assert payload["protocol"]["fingerprint"]["track"]["corruption"] == "static"
    assert len(list((tmp_path / "c" / "corrupted").glob("*.png"))) == 3


def test_refined_frames_feed_the_track(flight, tmp_path, capsys):
    world, ckpt, index = flight
    folder = world / "flights" / "flight00"
    args = [folder / "frames", "--track", "--refine", "--top-n", "3", "--min-inliers", "6", "--index", index]
    code, stdout, err = run(
        capsys, *args, "--ckpt", ckpt, "--coords-csv", folder / "truth.csv", "--json", "--out", tmp_path / "r"
    )
    assert code == 0, err
    rows = json.loads(stdout)
    assert all(set(r["refined"]) >= {"lat", "lon", "refined", "reason", "inliers", "tile"} for r in rows)
    payload = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "test/flight_refined/mean_m" in payload["metrics"] and "test/flight_refined/refined" in payload["metrics"]
    assert payload["protocol"]["fingerprint"]["track"]["refine"]["top_n"] == 3
    assert "flight_refined" in payload["protocol"]["fingerprint"]["conventions"]
    for r in rows:  # a frame whose refined tile the track chose sits at the refined position
        if r["refined"]["refined"] and r["track"]["tile"] == r["refined"]["tile"]:
            assert (r["track"]["lat"], r["track"]["lon"]) == pytest.approx((r["refined"]["lat"], r["refined"]["lon"]))


def one_error_line(code: int, err: str) -> str:
    err = without_stale_logging(err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_flight_input_is_one_line(flight, tmp_path, capsys):
    world, ckpt, index = flight
    folder = world / "flights" / "flight00"
    base = ["--index", index, "--ckpt", ckpt, "--out", tmp_path / "o"]
    untimed = tmp_path / "untimed"
    untimed.mkdir()
    for i, f in enumerate(sorted((folder / "frames").glob("*.png"))[:3]):
        (untimed / f"frame{i}.png").write_bytes(f.read_bytes())
    line = one_error_line(*run(capsys, untimed, "--track", *base)[::2])
    assert "frame0.png: the frame has no time" in line and "--fps" in line
    assert "--fps: a flight option; add --track" in one_error_line(*run(capsys, untimed, "--fps", "2", *base)[::2])
    for option, value in (("--max-speed", "5"), ("--corruption", "fog"), ("--temperature", "0.1")):
        line = one_error_line(*run(capsys, untimed, option, value, *base)[::2])
        assert f"{option}: a flight option; add --track" in line
    assert "--corrupt-frames" in one_error_line(*run(capsys, untimed, "--track", "--corruption", "fog", *base)[::2])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    assert "broken.mp4: " in one_error_line(*run(capsys, broken, "--track", *base)[::2])
    assert "a video is a flight's frames; localize it with --track" in one_error_line(*run(capsys, broken, *base)[::2])
    line = one_error_line(*run(capsys, folder / "frames", "--track", "--corrupt-frames", "5:40", *base)[::2])
    assert "--corrupt-frames 5:40" in line
    assert "START:END" in one_error_line(
        *run(capsys, folder / "frames", "--track", "--corrupt-frames", "7:3", *base)[::2]
    )
    assert "--max-speed" in one_error_line(*run(capsys, folder / "frames", "--track", "--max-speed", "-1", *base)[::2])
    # frames of another size mid-flight are embedded like the others, and said
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    from PIL import Image

    for i, f in enumerate(sorted((folder / "frames").glob("*.png"))[:4]):
        img = Image.open(f)
        (img.resize((80, 60)) if i == 2 else img).save(mixed / f.name)
    code, _, err = run(capsys, mixed, "--track", *base)
    assert code == 0 and f"{sorted(mixed.glob('*.png'))[2]} is 80x60" in err


def test_a_track_needs_tile_positions(smoke_run, flight, tmp_path, capsys):
    world, ckpt, _ = flight
    plain = tmp_path / "plain_tiles"
    plain.mkdir()
    for f in sorted((world / "tiles").glob("*.png"))[:6]:
        (plain / f.name).write_bytes(f.read_bytes())  # no world files: no positions
    index = tmp_path / "plain.index"
    build_index(plain, ckpt, index, trainer(), batch_size=8, num_workers=0)
    args = [world / "flights" / "flight00" / "frames", "--track", "--index", index, "--ckpt", ckpt, "--k", "3"]
    line = one_error_line(*run(capsys, *args, "--out", tmp_path / "o")[::2])
    assert "have no coordinates" in line and "--coords-csv" in line
