import pytest
from PIL import Image, TiffImagePlugin, TiffTags

from mean_geo.errors import MeanGeoError
from mean_geo.geo import haversine_m, locate_tiles, read_coordinates_csv, slippy_tile_centre


def tile(path, size=(10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "gray").save(path)
    return path


def test_slippy_tiles_and_distances():
    assert slippy_tile_centre(0, 0, 0) == pytest.approx((0.0, 0.0), abs=1e-9)
    lat, lon = slippy_tile_centre(1, 1, 0)  # north-east quarter of the world
    assert lat == pytest.approx(66.51326, abs=1e-4) and lon == pytest.approx(90.0)
    assert haversine_m((0, 0), (0, 1)) == pytest.approx(111_195, rel=1e-3)


def test_every_source_in_priority_order(tmp_path):
    root = tmp_path / "tiles"
    a = tile(root / "a.png")
    named = tile(root / "47.3769_8.5417.jpg")
    slippy = tile(root / "16" / "34322" / "22950.png")
    world = tile(root / "w.png", size=(11, 11))
    (root / "w.pgw").write_text("0.001\n0\n0\n-0.001\n8.0\n47.0\n")  # pixel (5, 5) -> (8.005, 46.995)
    geotiff = root / "g.tif"
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[33922] = (0.0, 0.0, 0.0, 8.5, 47.5, 0.0)
    info.tagtype[33922] = TiffTags.DOUBLE
    info[33550] = (0.01, 0.01, 0.0)
    info.tagtype[33550] = TiffTags.DOUBLE
    Image.new("RGB", (20, 20)).save(geotiff, tiffinfo=info)
    csv_file = tmp_path / "coords.csv"
    csv_file.write_text("path,lat,lon\na.png,10.5,20.25\n47.3769_8.5417.jpg,1.0,2.0\n")
    got = locate_tiles([a, named, slippy, world, geotiff], root, csv_file)
    assert got[0] == (10.5, 20.25)
    assert got[1] == (1.0, 2.0)  # the CSV wins over the file name
    assert got[2] == pytest.approx(slippy_tile_centre(16, 34322, 22950))
    assert got[3] == pytest.approx((46.995, 8.005))
    assert got[4] == pytest.approx((47.4, 8.6))
    assert locate_tiles([named], root) == [(47.3769, 8.5417)]
    assert locate_tiles([tile(root / "plain.png")], root) == [None]


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,x,y\na,1,2\n", "expected a header"),
        ("path,lat,lon\na,north,2\n", "not numbers"),
        ("path,lat,lon\na,95,2\n", "not a latitude"),
    ],
)
def test_bad_coordinate_csv(tmp_path, text, message):
    f = tmp_path / "c.csv"
    f.write_text(text)
    with pytest.raises(MeanGeoError, match=message):
        read_coordinates_csv(f)
