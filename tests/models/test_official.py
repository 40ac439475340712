"""The authors' checkpoint layout, built by hand (inverse of the mapping) from a random model."""

import math
import re

import pytest
import torch

from mean_geo.errors import CheckpointError
from mean_geo.models.mean import MEAN
from mean_geo.models.official import load_official_checkpoint
from tests.helpers.official import FAIR_BACKBONE

# ours -> theirs, written independently of the loader's table (regexes on our key names)
OURS_TO_THEIRS = [
    *FAIR_BACKBONE,
    (r"^gee\.deg\.branches\.(\d)\.", lambda m: f"model_1.DEG.FC1{int(m.group(1)) + 1}."),
    (r"^gee\.deg\.expand\.", r"model_1.DEG.FC1."),
    (r"^gee\.global_head\.", r"model_1.classifier1."),
    (r"^gee\.local_heads\.(\d)\.", lambda m: f"model_1.classifier_mcb{int(m.group(1)) + 1}."),
    (r"\.bottleneck\.dilated\.(\d)\.", lambda m: f".multi_scale_block.dilated{int(m.group(1)) + 1}."),
    (r"\.bottleneck\.pointwise\.", r".multi_scale_block.extra1.0."),
    (r"\.norm\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r".add_block.0.\1"),
    (r"^cea\.projection\.net\.0\.", r"model_1.proj.layers.0.0."),
    (r"^cea\.projection\.net\.1\.", r"model_1.proj.layers.0.1."),
    (r"^cea\.projection\.net\.3\.", r"model_1.proj.layers.1.0."),
    (r"^cea\.calibration\.proj\.", r"model_1.feature_scaling.proj."),
    (r"^cea\.fusion\.from_map\.", r"model_1.MSF.conv1."),
    (r"^cea\.fusion\.from_calibration\.", r"model_1.MSF.conv2."),
    (r"^cea\.fusion\.fuse\.0\.", r"model_1.MSF.conv_fusion."),
    (r"^cea\.fusion\.fuse\.1\.", r"model_1.MSF.bn."),
]


def to_theirs(model: MEAN, num_imagenet: int = 1000) -> dict:
    out = {}
    for key, value in model.state_dict().items():
        new = key
        for pattern, repl in OURS_TO_THEIRS:
            if key.startswith(("gee.global_head.", "gee.local_heads.")) and pattern.startswith(r"^backbone"):
                continue
            if "convnext" in new and pattern.startswith(r"\.norm"):
                continue  # block LayerNorms keep their name in the FAIR layout
            new = re.sub(pattern, repl, new)
        assert new != key, key
        out[new] = value.clone()
    dim = model.embedding_dim
    out["model_1.convnext.head.weight"] = torch.randn(num_imagenet, dim)
    out["model_1.convnext.head.bias"] = torch.randn(num_imagenet)
    out["logit_scale"] = torch.tensor(3.2)
    out["logit_scale_blocks"] = torch.tensor(2.6)
    for i in (1, 2, 3):
        out[f"w_blocks{i}"] = torch.tensor(1.0)
    return out


@pytest.mark.parametrize("prefix", ["", "module."])
def test_authors_checkpoint_loads_every_tensor(tmp_path, prefix):
    torch.manual_seed(0)
    source = MEAN(9, backbone="test_convnext")
    theirs = {prefix + k: v for k, v in to_theirs(source).items()}
    path = tmp_path / "weights.pth"
    torch.save(theirs, path)
    torch.manual_seed(1)
    target = MEAN(9, backbone="test_convnext")
    report = load_official_checkpoint(path, target)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert sorted(report.ignored) == sorted(
        [
            "backbone.net.head.fc.weight",
            "backbone.net.head.fc.bias",
            "logit_scale_blocks",
            "w_blocks1",
            "w_blocks2",
            "w_blocks3",
        ]
    )
    assert report.logit_scale == pytest.approx(3.2)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(source.eval()(x), target.eval()(x), atol=1e-6)


def test_other_class_count_and_strangers_are_reported(tmp_path):
    theirs = to_theirs(MEAN(150, backbone="test_convnext"))
    theirs["model_1.some_new_block.weight"] = torch.zeros(3)
    path = tmp_path / "sues.pth"
    torch.save({"state_dict": theirs}, path)
    report = load_official_checkpoint(path, MEAN(120, backbone="test_convnext"))
    assert report.unexpected == ["model_1.some_new_block.weight"]
    assert len(report.mismatched) == 6  # weight + bias of 3 classifiers: 150 → 120 classes
    assert all("gee." in k and ".classifier." in k for k in report.mismatched)
    assert set(report.missing) == {k.split(" ")[0] for k in report.mismatched}
    assert "6 mismatched" in report.summary()


def test_foreign_or_missing_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_official_checkpoint(tmp_path / "nope.pth", MEAN(3, backbone="test_convnext"))
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2), "fc.bias": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="no tensor matches"):
        load_official_checkpoint(path, MEAN(3, backbone="test_convnext"))
    bad = tmp_path / "text.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_official_checkpoint(bad, MEAN(3, backbone="test_convnext"))


def test_fine_tuning_starts_from_their_weights_and_their_temperature(tmp_path, data_dir, caplog):
    """`train init_from_official=<their .pth>`: their weights and their learned temperature."""
    import logging

    from mean_geo import train as train_entry
    from mean_geo.losses import MEANLoss
    from tests.helpers.config import compose_config, quiet_overrides

    torch.manual_seed(0)
    theirs = to_theirs(MEAN(5, backbone="test_convnext", cea_proj_dim=256, cea_out_dim=512))
    path = tmp_path / "authors.pth"
    torch.save(theirs, path)  # logit_scale 3.2 inside: T = exp(-3.2) = 0.0408
    loss = MEANLoss()
    load_official_checkpoint(path, MEAN(5, backbone="test_convnext"), loss=loss)
    assert loss.infonce.temperature == pytest.approx(math.exp(-3.2))
    cfg = compose_config(
        "train",
        [
            "experiment=smoke",
            f"init_from_official={path}",
            "trainer.fast_dev_run=true",
            *quiet_overrides(tmp_path, data_dir),
        ],
    )
    with caplog.at_level(logging.INFO, logger="mean_geo.train"):
        train_entry.run(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "authors' checkpoint" in r.getMessage()]
    assert "loaded" in line and "temperature 0.0408" in line
