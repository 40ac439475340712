"""The README's "Extending" section, followed as written: a registered architecture of your own
trains, exports and loads back; a registered dataset layout is selectable by name."""

from __future__ import annotations

import torch
from torch import nn

import mean_geo
from mean_geo import train as train_entry
from mean_geo.data.datamodule import University1652DataModule, register_datamodule
from mean_geo.inference.export import export
from mean_geo.models.mean import MEAN
from mean_geo.training.composition import build_datamodule
from tests.helpers.config import compose_config, quiet_overrides


@mean_geo.register_architecture("mean_projected")
class ProjectedMEAN(MEAN):
    """MEAN with a learned projection of the retrieval embedding (a new branch on the test path)."""

    retrieval_parts = (*MEAN.retrieval_parts, "projection")

    def __init__(self, num_classes: int, projection_dim: int = 32, **kwargs) -> None:
        super().__init__(num_classes, **kwargs)
        self.projection = nn.Linear(self.embedding_dim, projection_dim)
        self.embedding_dim = projection_dim

    def features(self, x: torch.Tensor):
        fmap, pooled, embedding = super().features(x)
        return fmap, pooled, self.projection(embedding)


@register_datamodule("u1652_mirror")
class MirroredU1652(University1652DataModule):
    """A layout of your own (here: University-1652's, under another name)."""


def test_a_registered_architecture_trains_exports_and_loads_back(tmp_path, data_dir):
    overrides = ["experiment=smoke", "eval.plots=false"]
    overrides += ["model.architecture=mean_projected", "+model.projection_dim=24"]
    cfg = compose_config("train", [*overrides, *quiet_overrides(tmp_path, data_dir)])
    metrics = train_entry.run(cfg)
    assert 0 <= metrics["test/d2s/R@1"] <= 100
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    from_ckpt = mean_geo.load_model(ckpt)
    folder = export(ckpt, tmp_path / "export")
    from_export = mean_geo.load_model(folder)
    for loaded in (from_ckpt, from_export):
        assert isinstance(loaded.model, ProjectedMEAN) and loaded.model.embedding_dim == 24
    assert from_ckpt.fingerprint == from_export.fingerprint
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        out = from_export.model(x)
        assert out.shape == (2, 24) and torch.equal(out, from_ckpt.model(x))
    # the projection is part of what the fingerprint identifies
    with torch.no_grad():
        from_export.model.projection.weight.add_(1.0)
    from mean_geo.inference.loading import fingerprint

    assert fingerprint(from_export.model, from_export.image_size, (from_export.mean, from_export.std)) != (
        from_export.fingerprint
    )


def test_a_registered_dataset_layout_is_selected_by_name(u1652_world):
    overrides = ["dataset=university1652", "dataset.name=u1652_mirror", f"dataset.root={u1652_world}"]
    cfg = compose_config("train", overrides)
    dm = build_datamodule(cfg.dataset)
    assert type(dm) is MirroredU1652
    dm.setup("fit")
    assert len(dm.train_set) > 0
