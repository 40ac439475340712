"""Corrupted drone queries (robustness): every corruption stays an image, is deterministic per
image, grows with severity; the settings are checked; the dataset corrupts before normalising."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from mean_geo.data.corruptions import CORRUPTIONS, condition_seed, corrupt, query_conditions
from mean_geo.data.eval_sets import CollateEval, CorruptedEvalImages, EvalImages, EvalKey
from mean_geo.data.layouts import ImageRecord
from mean_geo.data.transforms import eval_normalize, eval_resize, eval_transform
from mean_geo.errors import ConfigError

RANDOM = {"fog", "rain", "snow", "dark", "motion_blur", "noise"}  # the others draw nothing


def scene(seed: int = 0, size: int = 48) -> torch.Tensor:
    """A photo-like image: smooth colour gradients with blocks of detail (roofs, fields)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
    blocks = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=(size, size), mode="nearest")
    return (0.7 * image + 0.3 * blocks[0]).clamp(0, 1)


def generator(name: str, severity: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(condition_seed(name, severity, index))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_an_image_deterministic_and_grows_with_severity(name):
    image = scene()
    changes = []
    for severity in range(1, 6):
        out = corrupt(image, name, severity, generator(name, severity, 7))
        assert out.shape == image.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        again = corrupt(image, name, severity, generator(name, severity, 7))
        assert torch.equal(out, again)  # the same image, the same corruption, every time
        changes.append(float((out - image).abs().mean()))
    assert changes[0] > 0.002, changes  # severity 1 already changes the photo
    assert changes[4] > 1.4 * changes[0], changes  # severity 5 changes it much more
    if name in RANDOM:  # another image (index) gets other random draws
        other = corrupt(image, name, 3, generator(name, 3, 8))
        assert not torch.equal(other, corrupt(image, name, 3, generator(name, 3, 7)))


def test_seeds_differ_by_condition_and_image_and_do_not_depend_on_the_process():
    seeds = {condition_seed(n, s, i) for n in ("fog", "rain") for s in (1, 5) for i in range(50)}
    assert len(seeds) == 200
    # not Python's salted hash(): another process, with another hash seed, draws the same
    code = "from mean_geo.data.corruptions import condition_seed; print(condition_seed('fog', 3, 11))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(other.stdout) == condition_seed("fog", 3, 11)


def test_conditions_are_checked_and_expanded():
    assert query_conditions(["fog", "jpeg"], [5, 1]) == [("fog", 1), ("fog", 5), ("jpeg", 1), ("jpeg", 5)]
    assert len(query_conditions("all", [3])) == len(CORRUPTIONS)
    assert query_conditions([], [1, 2]) == []
    with pytest.raises(ConfigError, match=r"eval.corruptions: unknown \['hail'\]"):
        query_conditions(["fog", "hail"], [1])
    for bad in ([0], [6], [2.5], [True]):
        with pytest.raises(ConfigError, match="eval.severities"):
            query_conditions(["fog"], bad)


def test_the_corrupted_list_corrupts_before_normalising_and_keeps_labels(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray((scene(i).permute(1, 2, 0) * 255).byte().numpy()).save(path)
        paths.append(path)
    records = [ImageRecord(p, str(i), "drone") for i, p in enumerate(paths)]
    truth = {"altitude": torch.tensor([150.0, 200.0, 250.0], dtype=torch.float64)}
    clean = EvalImages(EvalKey("d2s", "query"), records, [10, 11, 12], eval_transform(32), truth)
    corrupted = CorruptedEvalImages(clean, eval_resize(32), eval_normalize(), "noise", 4)
    assert corrupted.key == ("d2s", "query", ("noise", 4)) and clean.key.clean and not corrupted.key.clean
    for index in (2, 0, 1):  # any order: the image's own seed decides
        sample, clean_sample = corrupted[index], clean[index]
        image, clean_image = sample["image"], clean_sample["image"]
        assert (sample["place"], sample["index"], sample["location"]) == (clean_sample["place"], index, str(index))
        assert sample["path"] == str(paths[index]) and float(sample["altitude"]) == 150.0 + 50 * index
        expected = eval_normalize()(
            corrupt(eval_resize(32)(Image.open(paths[index]).convert("RGB")), "noise", 4, generator("noise", 4, index))
        )
        assert torch.equal(image, expected)
        assert not torch.allclose(image, clean_image, atol=0.1)


def test_an_evaluation_batch_names_its_set_and_carries_its_truth(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((scene(i).permute(1, 2, 0) * 255).byte().numpy()).save(paths[-1])
    records = [ImageRecord(p, f"p{i}", "drone", None if i == 1 else 100) for i, p in enumerate(paths)]
    latlon = torch.tensor([[1.0, 2.0], [float("nan")] * 2, [3.0, 4.0]], dtype=torch.float64)
    truth = {"altitude": torch.tensor([100.0, float("nan"), 100.0], dtype=torch.float64), "latlon": latlon}
    key = EvalKey("s2d", "gallery")
    dataset = EvalImages(key, records, [5, 6, 7], eval_transform(16), truth)
    batch = CollateEval(key)([dataset[i] for i in (2, 0)])
    assert batch["key"] == key and batch["image"].shape == (2, 3, 16, 16)
    assert batch["place"].tolist() == [7, 5] and batch["index"].tolist() == [2, 0]
    assert batch["path"] == [str(paths[2]), str(paths[0])] and batch["location"] == ["p2", "p0"]
    assert torch.equal(batch["latlon"], latlon[[2, 0]]) and batch["altitude"].tolist() == [100.0, 100.0]
