"""SUES-200 exactly as downloaded (unsplit) is read with the benchmark's official 120/80 split."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from mean_geo.data.sues200_raw import ARCHIVE, RAW_DRONE, RAW_SATELLITE, official_train_ids, sues200_layout
from mean_geo.datamodules import SUES200DataModule
from mean_geo.errors import DatasetLayoutError
from tests.helpers.cli import run_hydra_entry, run_module

OFFICIAL_TEST_IDS = sorted({f"{i:04d}" for i in range(1, 201)} - official_train_ids())


def _png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def write_raw_sues200(parent: Path, images_per_altitude: int = 2, places: int = 200) -> Path:
    """The download's tree (tiny images): <parent>/SUES-200-512x512/{drone_view_512,satellite-view}."""
    root = parent / ARCHIVE
    for i in range(1, places + 1):
        pid = f"{i:04d}"
        colour = (i % 251, (7 * i) % 251, (13 * i) % 251)
        (root / RAW_SATELLITE / pid).mkdir(parents=True)
        (root / RAW_SATELLITE / pid / "0.png").write_bytes(_png(colour))
        for alt in (150, 200, 250, 300):
            folder = root / RAW_DRONE / pid / str(alt)
            folder.mkdir(parents=True)
            for n in range(images_per_altitude):
                (folder / f"{n}.jpg").write_bytes(_jpg(colour))
    return root


def _jpg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def raw_download(tmp_path_factory):
    return write_raw_sues200(tmp_path_factory.mktemp("sues_raw"))


def test_official_split_is_the_benchmarks_list():
    ids = official_train_ids()
    assert len(ids) == 120 and len(OFFICIAL_TEST_IDS) == 80
    assert {"0001", "0002", "0200"} <= ids and "0008" not in ids and "0199" in ids


@pytest.mark.parametrize("where", ["archive", "folder above"])
def test_download_trains_on_the_120_official_places_and_tests_on_the_other_80(raw_download, where):
    root = raw_download if where == "archive" else raw_download.parent
    assert sues200_layout(root) == ("raw", raw_download)
    dm = SUES200DataModule(root, altitude=150, image_size=16, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 120 and dm.train_split.locations == sorted(official_train_ids())
    assert len(dm.train_split.drone) == 120 * 2 and all(r.altitude == 150 for r in dm.train_split.drone)
    by_folder = dict(zip([f"{d}/{r}" for d, r, _ in dm.eval_keys()], dm.eval_datasets, strict=True))
    assert sorted({r.location for r in by_folder["d2s/query"].records}) == OFFICIAL_TEST_IDS
    assert len({r.location for r in by_folder["d2s/gallery"].records}) == 200  # galleries: every place
    assert len(by_folder["s2d/query"].records) == 80 and len(by_folder["s2d/gallery"].records) == 200 * 2


def test_all_altitudes_keep_one_satellite_per_place(raw_download):
    dm = SUES200DataModule(raw_download, altitude="all", image_size=16, num_workers=0)
    assert len(dm.train_split.drone) == 120 * 4 * 2 and len(dm.train_split.satellite) == 120


def test_a_root_that_is_neither_layout_names_both(tmp_path):
    (tmp_path / "photos").mkdir()
    for root in (tmp_path / "photos", tmp_path / "missing"):
        with pytest.raises(DatasetLayoutError) as exc:
            sues200_layout(root)
        assert "drone_view_512" in str(exc.value) and "Training/<altitude>" in str(exc.value)


def test_smoke_on_a_real_dataset_never_writes_a_world_there(tmp_path, monkeypatch, capsys):
    """`experiment=smoke dataset=sues200 dataset.root=<missing>`: the smoke experiment's world
    settings must not generate a synthetic world at the user's real-dataset path."""
    missing = tmp_path / "my_real_sues200"
    from mean_geo import train as train_entry

    args = ["experiment=smoke", "dataset=sues200", f"dataset.root={missing}"]
    assert "dataset root does not exist" in run_hydra_entry(train_entry.main, args, tmp_path, monkeypatch, capsys)
    assert not missing.exists()


@pytest.mark.slow
def test_smoke_model_trains_and_evaluates_on_the_download(raw_download, tmp_path):
    from mean_geo import train as train_entry
    from tests.helpers.config import compose_config, quiet_overrides

    cfg = compose_config(
        "train",
        [
            "experiment=smoke",
            "dataset=sues200",
            f"dataset.root={raw_download}",
            "dataset.altitude=150",
            "dataset.batch_size=16",
            "dataset.image_size=32",
            "eval.plots=false",
            *quiet_overrides(tmp_path, tmp_path / "data"),
        ],
    )
    metrics = train_entry.run(cfg)
    assert 0 <= metrics["test/d2s/R@1"] <= 100 and 0 <= metrics["test/s2d/AP"] <= 100


@pytest.mark.slow
def test_check_passes_a_complete_download_and_names_what_a_partial_copy_lacks(tmp_path):
    root = write_raw_sues200(tmp_path, images_per_altitude=50)  # 40,200 tiny files, official counts

    def check() -> subprocess.CompletedProcess:
        return run_module(["-m", "mean_geo.check", "dataset=sues200", f"dataset.root={root}"], tmp_path)

    complete = check()
    assert complete.returncode == 0, complete.stderr[-2000:]
    assert "complete (the official counts)" in complete.stdout
    dm = SUES200DataModule(root, altitude=200, image_size=16, num_workers=0)
    dm.setup("fit")
    assert dm.warn_if_not_official() == []  # training on the complete release: no warning
    for n in (3, 7, 11):  # a partial copy: 3 photos of place 0005 at 200 m are missing
        (root / RAW_DRONE / "0005" / "200" / f"{n}.jpg").unlink()
    partial = check()
    assert partial.returncode == 1
    assert "200/test/gallery_drone: place 0005 has 47 images, official 50" in partial.stderr
    assert "200/test/gallery_drone: 9,997 images, official 10,000" in partial.stderr
    assert "150/" not in partial.stderr  # the other altitudes are complete


def test_training_on_a_copy_that_differs_from_the_release_warns_in_one_line(raw_download, caplog):
    import logging

    dm = SUES200DataModule(raw_download, altitude=150, image_size=16, num_workers=0)
    with caplog.at_level(logging.WARNING, logger="mean_geo.datamodules.base"):
        dm.setup("fit")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "differs from the official sues200 release: 150/train/drone: 240 images, official 6,000" in warning
    assert "(+" in warning and "python -m mean_geo.check" in warning and "\n" not in warning
    assert all("200/" not in d for d in dm.warn_if_not_official())  # only the altitude trained on
