import sys

import pyproj
import pytest
from PIL import Image, TiffImagePlugin, TiffTags

from mean_geo.errors import MeanGeoError
from mean_geo.inference.geo import haversine_m, locate_tiles, read_coordinates_csv, slippy_tile_centre


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
        ("path,lat,lon\na,north,2\n", "not finite numbers"),
        ("path,lat,lon\na,95,2\n", "not a latitude"),
        ("path,lat,lon\na,nan,2\n", "c.csv:2: lat/lon are not finite numbers"),
        ("place,lat,lon\nb,40,inf\n", "c.csv:2: lat/lon are not finite numbers"),
    ],
)
def test_bad_coordinate_csv(tmp_path, text, message):
    f = tmp_path / "c.csv"
    f.write_text(text)
    with pytest.raises(MeanGeoError, match=message):
        read_coordinates_csv(f)


@pytest.mark.parametrize(
    "world, message",
    [
        ("0.01\n0\n0\n-0.01\nnan\n47.5\n", "w.pgw: its georeferencing is not finite numbers"),
        ("0.01\n0\n0\n-0.01\n8.5\ninf\n", "w.pgw: its georeferencing is not finite numbers"),
        ("0\n0\n0\n0\n8.5\n47.5\n", "w.pgw: not a usable world file"),
        ("0.01\n0.002\n0\n-0.01\n8.5\n47.5\n", "w.png: a rotated or sheared raster"),
    ],
)
def test_a_world_file_of_non_finite_degenerate_or_rotated_numbers_is_named(tmp_path, world, message):
    png = tile(tmp_path / "w.png", size=(11, 11))
    (tmp_path / "w.pgw").write_text(world)
    with pytest.raises(MeanGeoError, match=message):
        locate_tiles([png], tmp_path)


def _geotiff(path, tie, scale, geokeys=None):
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[33922], info.tagtype[33922] = tie, TiffTags.DOUBLE
    info[33550], info.tagtype[33550] = scale, TiffTags.DOUBLE
    if geokeys is not None:
        info[34735], info.tagtype[34735] = geokeys, TiffTags.SHORT
    Image.new("RGB", (20, 20)).save(path, tiffinfo=info)
    return path


def test_projected_tiles_are_converted_and_a_missing_crs_is_named(tmp_path):
    # GeoKeys: version header, then GTModelType=1 (projected) and ProjectedCSType=32632 (UTM 32N)
    utm_keys = (1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 32632)
    utm = _geotiff(tmp_path / "utm.tif", (0.0, 0.0, 0.0, 465000.0, 5247000.0, 0.0), (0.5, 0.5, 0.0), utm_keys)
    # the tile's centre: 10 px of 0.5 m east and south of the corner, by pyproj itself
    to_lonlat = pyproj.Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(465000.0 + 5.0, 5247000.0 - 5.0)
    assert locate_tiles([utm], tmp_path)[0] == pytest.approx((lat, lon), abs=1e-9)
    geographic_keys = (1, 1, 0, 1, 1024, 0, 1, 2)  # GTModelType=2: geographic
    ok = _geotiff(tmp_path / "ll.tif", (0.0, 0.0, 0.0, 8.5, 47.5, 0.0), (0.01, 0.01, 0.0), geographic_keys)
    assert locate_tiles([ok], tmp_path)[0] == pytest.approx((47.4, 8.6))
    no_keys = _geotiff(tmp_path / "merc.tif", (0.0, 0.0, 0.0, 950000.0, 6000000.0, 0.0), (1.0, 1.0, 0.0))
    with pytest.raises(
        MeanGeoError, match="merc.tif: georeferenced without a CRS, and its coordinates are not degrees"
    ):
        locate_tiles([no_keys], tmp_path)
    world = tile(tmp_path / "w.png", size=(11, 11))
    (tmp_path / "w.pgw").write_text("0.5\n0\n0\n-0.5\n465000\n5247000\n")  # metres, no .prj
    with pytest.raises(MeanGeoError, match="w.png: georeferenced without a CRS"):
        locate_tiles([world], tmp_path)
    (tmp_path / "w.prj").write_text(pyproj.CRS.from_epsg(32632).to_wkt())  # ... its CRS beside it: fine
    lon, lat = to_lonlat.transform(465000.0 + 2.5, 5247000.0 - 2.5)  # pixel (5, 5): a world file names pixel centres
    assert locate_tiles([world], tmp_path)[0] == pytest.approx((lat, lon), abs=1e-9)
    (tmp_path / "w.prj").write_text("not a CRS at all")
    with pytest.raises(MeanGeoError, match="w.prj: not a CRS pyproj knows"):
        locate_tiles([world], tmp_path)


def test_without_the_geo_extra_plain_tiles_work_and_georeferenced_ones_name_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # what a missing extra looks like to an import
    plain = tile(tmp_path / "plain.tif")  # a TIFF without GeoTIFF tags (DenseUAV's tiles)
    slippy = tile(tmp_path / "16" / "34322" / "22950.png")
    assert locate_tiles([plain, slippy], tmp_path) == [None, pytest.approx(slippy_tile_centre(16, 34322, 22950))]
    geotiff = _geotiff(tmp_path / "g.tif", (0.0, 0.0, 0.0, 8.5, 47.5, 0.0), (0.01, 0.01, 0.0))
    with pytest.raises(MeanGeoError, match=r"need the geo extra \(rasterio, pyproj\): pip install -e '\.\[geo\]'"):
        locate_tiles([geotiff], tmp_path)
