from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from mean_geo.datamodules import SUES200DataModule, University1652DataModule
from mean_geo.errors import ConfigError


def test_sues200_all_altitudes_train_batches(sues_world):
    dm = SUES200DataModule(sues_world, altitude="all", image_size=32, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 6 and len(dm.train_set) == 4 * 6 * 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["drone"].dtype == batch["satellite"].dtype == torch.uint8  # workers hand over uint8 ...
    finished = dm.on_after_batch_transfer(batch, 0)  # ... normalised where they train
    drone, sat, labels = finished["drone"], finished["satellite"], finished["label"]
    assert drone.shape == sat.shape == (4, 3, 32, 32) and drone.dtype == torch.float32
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert torch.allclose(drone[0], (batch["drone"][0].float() / 255 - mean) / std, atol=1e-5)
    assert len(set(labels.tolist())) == 4 and labels.max() < 6
    assert [k[:2] for k in dm.eval_keys()] == [
        ("d2s", "query"),
        ("d2s", "gallery"),
        ("s2d", "query"),
        ("s2d", "gallery"),
    ]
    sizes = [len(d) for d in dm.eval_datasets]
    assert sizes == [4 * 4 * 3, 10, 4, 4 * 10 * 3]


def test_eval_items_carry_location_ids_and_dataset_index(u1652_world):
    dm = University1652DataModule(u1652_world, image_size=32, num_workers=0, directions=["s2d"])
    dm.setup("validate")
    assert [k[:2] for k in dm.eval_keys()] == [("s2d", "query"), ("s2d", "gallery")]
    query, gallery = dm.eval_datasets
    sample = gallery[5]
    assert sample["image"].shape == (3, 32, 32) and sample["index"] == 5
    assert sample["place"] == int(gallery.records[5].location) and sample["location"] == gallery.records[5].location
    assert set(query.location_ids.tolist()) < set(gallery.location_ids.tolist())
    batch = next(iter(dm.test_dataloader()[1]))
    assert batch["key"] == ("s2d", "gallery", None)  # the loader names its set: no index to decode
    assert batch["index"].tolist() == list(range(len(batch["index"])))  # eval order is the dataset order
    assert batch["path"] == [str(r.path) for r in gallery.records[: len(batch["path"])]]


def test_joint_flip_mirrors_both_views(u1652_world):
    kwargs = dict(image_size=32, num_workers=0, augment=False)
    plain = University1652DataModule(u1652_world, joint_flip_p=0.0, **kwargs)
    plain.setup("fit")
    flipped = University1652DataModule(u1652_world, **kwargs)
    flipped.setup("fit")
    flipped.train_set.joint_flip_p = 1.0
    d0, s0, _ = plain.train_set[0]
    d1, s1, _ = flipped.train_set[0]
    assert torch.allclose(d1, d0.flip(-1), atol=1e-5) and torch.allclose(s1, s0.flip(-1), atol=1e-5)


def test_geometric_augmentation_moves_pixels_and_changes_none(u1652_world):
    """``augment=geometric``: the drone view as evaluated (no colour change), the satellite tile
    turned by a multiple of 90°, both mirrored together half of the time."""
    plain = University1652DataModule(u1652_world, image_size=32, num_workers=0, augment=False, joint_flip_p=0.0)
    plain.setup("fit")
    geometric = University1652DataModule(u1652_world, image_size=32, num_workers=0, augment="geometric")
    geometric.setup("fit")
    assert geometric.train_set.joint_flip_p == 0.5
    d0, s0, _ = plain.train_set[0]
    turns = set()
    torch.manual_seed(0)
    for _ in range(24):
        d1, s1, _ = geometric.train_set[0]
        mirrored = not torch.equal(d1, d0)
        if mirrored:
            d1, s1 = d1.flip(-1), s1.flip(-1)
        assert torch.equal(d1, d0)
        (k,) = [k for k in range(4) if torch.equal(s1, torch.rot90(s0, k, dims=(-2, -1)))]
        turns.add((k, mirrored))
    assert {k for k, _ in turns} == {0, 1, 2, 3} and {m for _, m in turns} == {False, True}


def test_an_unknown_augmentation_is_named(u1652_world):
    with pytest.raises(ConfigError, match="dataset.augment='colour': expected true, false or geometric"):
        University1652DataModule(u1652_world, augment="colour")


@pytest.mark.parametrize(
    "setting, device, pinned", [(None, "cuda", True), (None, "cpu", False), (False, "cuda", False), (True, "cpu", True)]
)
def test_memory_is_pinned_for_the_trainers_device_not_for_a_gpu_being_present(u1652_world, setting, device, pinned):
    """dataset.pin_memory=null follows the trainer: a hardware=cpu run on a GPU node pins nothing
    (pinning creates a CUDA context on GPU 0 in every process); set, the setting wins."""
    dm = University1652DataModule(u1652_world, image_size=32, batch_size=2, num_workers=0, pin_memory=setting)
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)), world_size=1, global_rank=0
    )
    dm.setup("fit")
    assert dm.train_dataloader().pin_memory is pinned
    assert all(loader.pin_memory is pinned for loader in dm.test_dataloader())


def test_gallery_tiles_sized_in_the_coordinates_csv_carry_their_footprints(u1652_world, tmp_path):
    """``m_per_px`` in a path-keyed coordinates CSV: each D→S gallery tile's north-up footprint
    travels with its batches (the error browser lays the tiles on its map)."""
    import math

    from mean_geo.data.eval_sets import EvalKey

    tiles = sorted((u1652_world / "test" / "gallery_satellite").glob("*/*"))
    rows = [f"{p.relative_to(u1652_world)},{30 + i / 100},{120 + i / 100},2.0" for i, p in enumerate(tiles[:3])]
    csv_file = tmp_path / "coords.csv"
    csv_file.write_text("path,lat,lon,m_per_px\n" + "\n".join(rows) + "\n")
    dm = University1652DataModule(u1652_world, image_size=32, num_workers=0, coordinates_csv=str(csv_file))
    dm.setup("test")
    gallery = dm.eval_set("test", EvalKey("d2s", "gallery"))
    footprints = gallery.truth["footprint"]
    known = [i for i in range(len(gallery)) if not footprints[i].isnan().any()]
    assert [gallery.records[i].path for i in known] == tiles[:3]
    side = Image.open(tiles[0]).size[0] * 2.0  # metres
    (north, west), (_, east), (south, _), _ = footprints[known[0]].tolist()
    assert (north - south) * 111_195 == pytest.approx(side, rel=1e-3)
    assert (east - west) * 111_195 * math.cos(math.radians(30)) == pytest.approx(side, rel=1e-3)
    assert "footprint" not in dm.eval_set("test", EvalKey("d2s", "query")).truth
