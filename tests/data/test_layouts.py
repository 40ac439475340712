import hashlib
import shutil
from pathlib import Path

import pytest

from mean_geo.data import layouts
from mean_geo.errors import DatasetLayoutError


def snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sues200_reader_counts(sues_world):
    one = layouts.sues200_train(sues_world, 150)
    assert len(one.locations) == 6 and len(one.drone) == 6 * 3 and len(one.satellite) == 6
    assert {r.altitude for r in one.drone} == {150} and {r.view for r in one.drone} == {"drone"}
    every = layouts.sues200_train(sues_world, "all")
    assert len(every.drone) == 4 * 6 * 3 and len(every.satellite) == 6  # satellite de-duplicated
    assert every.label_of == {loc: i for i, loc in enumerate(sorted(every.locations))}
    assert len(layouts.sues200_test(sues_world, "query_drone", 200)) == 4 * 3
    assert len(layouts.sues200_test(sues_world, "gallery_drone", 200)) == 10 * 3
    assert len(layouts.sues200_test(sues_world, "gallery_satellite", [150, 300])) == 10


def test_u1652_reader_counts(u1652_world):
    train = layouts.u1652_train(u1652_world)
    assert train.locations == [f"{i:04d}" for i in range(1, 7)]
    assert len(train.drone) == 24 and len(train.satellite) == 6
    assert len(layouts.u1652_test(u1652_world, "query_drone")) == 24
    assert len(layouts.u1652_test(u1652_world, "gallery_satellite")) == 8
    assert len(layouts.u1652_test(u1652_world, "gallery_drone")) == 32
    rec = layouts.u1652_test(u1652_world, "query_satellite")[0]
    assert rec.view == "satellite" and rec.altitude is None and rec.path.is_file()


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def broken_copy(u1652_world, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(u1652_world, dst)
    return dst


def test_wrong_root_and_missing_split(tmp_path, u1652_world):
    with pytest.raises(DatasetLayoutError) as e:
        layouts.u1652_train(tmp_path / "nope")
    assert "does not exist" in one_line(e) and "nope" in one_line(e)
    with pytest.raises(DatasetLayoutError) as e:
        layouts.sues200_train(u1652_world)  # a University-1652 tree given as SUES-200
    assert "'Training'" in one_line(e)


def test_missing_view_folder(broken_copy):
    before = snapshot(broken_copy)
    shutil.rmtree(broken_copy / "test" / "gallery_drone")
    before = snapshot(broken_copy)
    with pytest.raises(DatasetLayoutError) as e:
        layouts.u1652_test(broken_copy, "gallery_drone")
    assert "gallery_drone: missing folder" in one_line(e)
    assert snapshot(broken_copy) == before


@pytest.mark.parametrize("content", [b"", b"hello, not an image"])
def test_empty_or_non_image_file(broken_copy, content):
    bad = next((broken_copy / "train" / "drone" / "0002").iterdir())
    bad.write_bytes(content)
    before = snapshot(broken_copy)
    with pytest.raises(DatasetLayoutError) as e:
        layouts.u1652_train(broken_copy)
    msg = one_line(e)
    assert str(bad) in msg and ("empty file" in msg or "not a .jpeg image" in msg)
    assert snapshot(broken_copy) == before


def test_location_without_images(broken_copy):
    loc = broken_copy / "train" / "satellite" / "0003"
    for p in loc.iterdir():
        p.unlink()
    with pytest.raises(DatasetLayoutError) as e:
        layouts.u1652_train(broken_copy)
    assert "0003: no images" in one_line(e)


def test_mismatched_train_folders(broken_copy):
    shutil.rmtree(broken_copy / "train" / "drone" / "0004")
    with pytest.raises(DatasetLayoutError) as e:
        layouts.u1652_train(broken_copy)
    msg = one_line(e)
    assert "do not match" in msg and "0004" in msg


def test_bad_altitude_and_folder_names(sues_world):
    with pytest.raises(DatasetLayoutError) as e:
        layouts.sues200_train(sues_world, 175)
    assert "175" in one_line(e)
    with pytest.raises(DatasetLayoutError) as e:
        layouts.sues200_test(sues_world, "query_street")
    assert "query_street" in one_line(e)
