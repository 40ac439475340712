"""dataset.cache=uint8: decoded once at the training size, reused, keyed by the files, never in the dataset."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from mean_geo.data import decoded_cache
from mean_geo.data.decoded_cache import DecodedCache, decode_at
from mean_geo.datamodules import University1652DataModule
from mean_geo.errors import ConfigError


def images(folder, n=5, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (size, size + 8 * i, 3), dtype=np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


def test_rows_are_the_training_path_decode_and_a_second_run_reuses_them(tmp_path):
    paths = images(tmp_path / "data")
    cache = DecodedCache(tmp_path / "cache", paths + paths[:2], 32)  # repeats are stored once
    assert not cache.ready() and cache.nbytes == 5 * 32 * 32 * 3
    cache.build()
    rows = cache.images()
    for p in paths:
        assert np.array_equal(rows[cache.row_of[str(p)]], decode_at(p, 32))
    stamp = cache.file.stat().st_mtime_ns
    again = DecodedCache(tmp_path / "cache", paths, 32)
    assert again.ready() and again.file == cache.file
    again.build()
    assert cache.file.stat().st_mtime_ns == stamp  # not written again
    assert DecodedCache(tmp_path / "cache", paths, 48).file != cache.file  # another size, another file


def test_a_changed_image_makes_a_new_cache_not_a_stale_one(tmp_path):
    paths = images(tmp_path / "data")
    first = DecodedCache(tmp_path / "cache", paths, 32)
    first.build()
    st = paths[0].stat()
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = DecodedCache(tmp_path / "cache", paths, 32)
    assert second.file != first.file and not second.ready()


def test_the_cost_is_said_first_and_a_full_disk_is_one_line(tmp_path, monkeypatch, caplog):
    paths = images(tmp_path / "data")
    cache = DecodedCache(tmp_path / "cache", paths, 32)
    with caplog.at_level("WARNING"):
        cache.build()
    assert "decoding 5 training images at 32 px once: 0.0 MB in" in caplog.text
    small = DecodedCache(tmp_path / "other", paths, 64)

    class Usage:
        free = 100

    monkeypatch.setattr(decoded_cache.shutil, "disk_usage", lambda _: Usage)
    with pytest.raises(ConfigError, match=r"5 images at 64 px need 0.1 MB in .*other, which has 0.0 MB free"):
        small.build()
    assert not any((tmp_path / "other").iterdir())


def test_the_datamodule_reads_the_cache_and_never_writes_into_the_dataset(u1652_world, tmp_path):
    kwargs = dict(image_size=32, num_workers=0, augment=False, joint_flip_p=0.0)
    plain = University1652DataModule(u1652_world, **kwargs)
    plain.setup("fit")
    cached = University1652DataModule(u1652_world, cache="uint8", cache_dir=tmp_path / "cache", **kwargs)
    cached.prepare_data()
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 1
    cached.setup("fit")
    for i in (0, 7, len(plain.train_set) - 1):
        assert all(torch.equal(a, b) for a, b in zip(plain.train_set[i][:2], cached.train_set[i][:2], strict=True))
    inside = University1652DataModule(u1652_world, cache="uint8", cache_dir=u1652_world / "cache", **kwargs)
    with pytest.raises(ConfigError, match="inside the dataset root"):
        inside.setup("fit")
    assert not (u1652_world / "cache").exists()


def test_cache_and_gpu_decoding_exclude_each_other_and_values_are_named(u1652_world, tmp_path):
    with pytest.raises(ConfigError, match="dataset.cache=uint8 with dataset.decode_on=gpu"):
        University1652DataModule(u1652_world, cache="uint8", cache_dir=tmp_path, decode_on="gpu")
    with pytest.raises(ConfigError, match="dataset.cache='float': expected one of none, uint8"):
        University1652DataModule(u1652_world, cache="float")
    with pytest.raises(ConfigError, match="dataset.decode_on='tpu': expected one of cpu, gpu"):
        University1652DataModule(u1652_world, decode_on="tpu")
