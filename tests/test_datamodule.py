import torch

from mean_geo.data.datamodule import SUES200DataModule, University1652DataModule


def test_sues200_all_altitudes_train_batches(sues_world):
    dm = SUES200DataModule(sues_world, altitude="all", image_size=32, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 6 and len(dm.train_set) == 4 * 6 * 3
    drone, sat, labels = next(iter(dm.train_dataloader()))
    assert drone.shape == sat.shape == (4, 3, 32, 32) and drone.dtype == torch.float32
    assert len(set(labels.tolist())) == 4 and labels.max() < 6
    assert dm.eval_sets == [("d2s", "query"), ("d2s", "gallery"), ("s2d", "query"), ("s2d", "gallery")]
    sizes = [len(d) for d in dm.eval_datasets]
    assert sizes == [4 * 4 * 3, 10, 4, 4 * 10 * 3]


def test_eval_items_carry_location_ids_and_dataset_index(u1652_world):
    dm = University1652DataModule(u1652_world, image_size=32, num_workers=0, directions=["s2d"])
    dm.setup("validate")
    assert dm.eval_sets == [("s2d", "query"), ("s2d", "gallery")]
    query, gallery = dm.eval_datasets
    img, loc, idx = gallery[5]
    assert img.shape == (3, 32, 32) and idx == 5
    assert loc == int(gallery.records[5].location)
    assert set(query.location_ids.tolist()) < set(gallery.location_ids.tolist())
    batch = next(iter(dm.test_dataloader()[1]))
    assert batch[2].tolist() == list(range(len(batch[2])))  # eval order is the dataset order


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
