"""The authors' checkpoint layouts of Sample4Geo, DAC and CAMP, built by hand from random models of
ours (the inverse of the loader's tables, written independently), load with every key accounted
for; `export --official` turns one into an export that embeds as the model it came from."""

from __future__ import annotations

import math
import re

import pytest
import torch

from mean_geo import export as export_entry
from mean_geo.inference.loading import load_model
from mean_geo.losses import CAMPLoss, DACLoss
from mean_geo.models.mean import MEAN
from mean_geo.models.official import load_official_checkpoint
from mean_geo.models.peers import CAMP, DAC, Sample4Geo
from tests.helpers.cli import exit_code
from tests.helpers.official import FAIR_BACKBONE
from tests.models.test_official import to_theirs as mean_layout

MCCG_HEADS = [  # ours -> the MCCG heads and DAC's DSA / CAMP's position embedding under model_1.
    (r"^gee\.attention\.gates\.0\.conv\.", r"model_1.tri_layer.cw.conv.conv."),
    (r"^gee\.attention\.gates\.0\.norm\.", r"model_1.tri_layer.cw.conv.bn."),
    (r"^gee\.attention\.gates\.1\.conv\.", r"model_1.tri_layer.hc.conv.conv."),
    (r"^gee\.attention\.gates\.1\.norm\.", r"model_1.tri_layer.hc.conv.bn."),
    (r"^gee\.global_head\.", r"model_1.classifier1."),
    (r"^gee\.local_heads\.(\d)\.", lambda m: f"model_1.classifier_mcb{int(m.group(1)) + 1}."),
    (r"\.bottleneck\.", r".add_block.0."),
    (r"\.norm\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r".add_block.1.\1"),
    (r"\.classifier\.(weight|bias)$", r".classifier.0.\1"),
    (r"^cea\.projection\.(\d)\.", r"model_1.proj.mlp.\1."),
    (r"^position\.embedding$", r"model_1.pos_embed"),
    (r"^position\.scale$", r"model_1.pos_scale"),
]


def to_theirs(model) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        if isinstance(model, Sample4Geo):
            new = re.sub(r"^backbone\.net\.", "model.", key)
        else:
            new = key
            rules = FAIR_BACKBONE if key.startswith("backbone.") else MCCG_HEADS
            for pattern, repl in rules:
                if "convnext.stages" in new and pattern.startswith(r"\.norm"):
                    continue
                new = re.sub(pattern, repl, new)
        assert new != key, key
        out[new] = value.clone()
    out["logit_scale"] = torch.tensor(3.1)
    if not isinstance(model, Sample4Geo):
        dim = model.embedding_dim
        out["model_1.convnext.head.weight"], out["model_1.convnext.head.bias"] = (
            torch.randn(1000, dim),
            torch.randn(1000),
        )
        out["logit_scale_blocks"] = torch.tensor(2.7)
        out.update({f"w_blocks{i}": torch.tensor(1.0) for i in (1, 2, 3)})
    if isinstance(model, CAMP):
        out.update({f"ECE_weight_{n}": torch.tensor(0.0) for n in ("D_D", "S_S", "S_fine_S_fine", "D_fine_S_fine")})
        out["ECE_weight_D_fine_D_fine"] = torch.tensor(0.8)
    elif isinstance(model, DAC):
        out.update(
            {k.replace("model_1.proj.", "model_1.proj_obj."): v.clone() for k, v in out.items() if ".proj." in k}
        )
    return out


@pytest.mark.parametrize("prefix", ["", "module."])
def test_dac_checkpoint_loads_every_tensor_and_its_temperature(tmp_path, prefix):
    torch.manual_seed(0)
    source = DAC(9, backbone="test_convnext")
    path = tmp_path / "dac.pth"
    torch.save({prefix + k: v for k, v in to_theirs(source).items()}, path)
    torch.manual_seed(1)
    target, loss = DAC(9, backbone="test_convnext"), DACLoss()
    report = load_official_checkpoint(path, target, loss)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert all(
        re.match(r"^(backbone\.net\.head\.fc|logit_scale_blocks|w_blocks|model_1\.proj_obj)", k) for k in report.ignored
    )
    assert len([k for k in report.ignored if "proj_obj" in k]) == 7  # 2 convolutions, a BatchNorm's 5 tensors
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    assert loss.infonce.temperature == pytest.approx(math.exp(-3.1))


def test_camp_checkpoint_fills_the_position_embedding_and_the_losses_learnt_scalars(tmp_path):
    torch.manual_seed(0)
    source = CAMP(9, backbone="test_convnext", use_gee=True)  # their checkpoint holds the heads
    path = tmp_path / "camp.pth"
    torch.save(to_theirs(source), path)
    target, loss = CAMP(9, backbone="test_convnext"), CAMPLoss()  # ours trains without the heads
    report = load_official_checkpoint(path, target, loss)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert any(k.startswith("gee.") for k in report.ignored)  # the heads: computed by them, in no loss
    torch.testing.assert_close(target.position.embedding, source.position.embedding)
    assert float(loss.ece_weight) == pytest.approx(0.8)
    assert loss.block_infonce.temperature == pytest.approx(math.exp(-2.7))
    assert loss.infonce.temperature == pytest.approx(math.exp(-3.1))


def test_sample4geo_checkpoint_is_timms_keys(tmp_path):
    torch.manual_seed(0)
    source = Sample4Geo(backbone="test_convnext")
    path = tmp_path / "s4g.pth"
    torch.save(to_theirs(source), path)
    target = Sample4Geo(backbone="test_convnext")
    report = load_official_checkpoint(path, target)
    assert report.missing == report.unexpected == report.ignored == [] and report.loaded == len(source.state_dict())
    assert report.logit_scale == pytest.approx(3.1)


def their_release(cls, path):
    """A seeded model of ``cls`` and its weights saved in its authors' layout at ``path``."""
    torch.manual_seed(0)
    source = cls(num_classes=9, backbone="test_convnext").eval()
    torch.save(mean_layout(source) if cls is MEAN else to_theirs(source), path)
    return source, path


@pytest.mark.parametrize("cls,method", [(Sample4Geo, "sample4geo"), (DAC, "dac"), (CAMP, "camp"), (MEAN, "mean")])
def test_export_official_gives_the_eval_embedding_of_the_model_it_came_from(cls, method, tmp_path, capsys):
    source, path = their_release(cls, tmp_path / f"{method}.pth")
    out = tmp_path / "export"
    args = ["--official", str(path), "--method", method, "--backbone", "test_convnext", "--out", str(out)]
    assert exit_code(export_entry.main, args) == 0
    printed = capsys.readouterr().out
    assert "loaded" in printed and "exported to" in printed
    loaded = load_model(out)
    assert type(loaded.model) is cls and loaded.image_size == 384
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), source(x))


def test_another_methods_checkpoint_or_a_missing_method_is_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "s4g.pth"
    torch.save(to_theirs(Sample4Geo(backbone="test_convnext")), path)
    out = tmp_path / "export"
    out.mkdir()  # the user's empty folder: kept as it was when the file does not fit
    args = ["--official", str(path), "--method", "dac", "--backbone", "test_convnext", "--out", str(out)]
    assert exit_code(export_entry.main, args) == 2
    err = capsys.readouterr().err
    assert "no tensor matches DAC's layout" in err and "Traceback" not in err
    assert out.is_dir() and not any(out.iterdir())
    assert exit_code(export_entry.main, ["--official", str(path), "--out", str(out)]) == 2
    assert "--official needs --method" in capsys.readouterr().err


def test_fine_tuning_a_baseline_starts_from_its_authors_weights(tmp_path, data_dir, caplog):
    """`train method=camp init_from_official=<their .pth>`: CAMP's layout, its weights and scalars."""
    import logging

    from mean_geo import train as train_entry
    from tests.helpers.config import compose_config, quiet_overrides

    torch.manual_seed(0)
    path = tmp_path / "camp.pth"
    torch.save(to_theirs(CAMP(5, backbone="test_convnext", use_gee=True)), path)  # logit_scale 3.1 inside
    overrides = ["experiment=smoke", "method=camp", f"init_from_official={path}", "trainer.fast_dev_run=true"]
    cfg = compose_config("train", [*overrides, *quiet_overrides(tmp_path, data_dir)])
    with caplog.at_level(logging.INFO, logger="mean_geo.train"):
        train_entry.run(cfg)
    (line,) = [r.getMessage() for r in caplog.records if "authors' checkpoint" in r.getMessage()]
    assert "loaded" in line and "temperature 0.0450" in line and "missing" not in line


@pytest.mark.parametrize(
    "cls, wrong, right",
    [(CAMP, "dac", "camp"), (DAC, "camp", "dac"), (MEAN, "dac", "mean"), (DAC, "mean", "dac"), (CAMP, "mean", "camp")],
)
def test_a_release_converted_as_another_method_is_named_not_exported(cls, wrong, right, tmp_path, capsys):
    """CAMP's release with --method dac loaded its ConvNeXt and was exported labelled DAC, with only
    a list of unexpected keys to tell; the layouts that place every key are compared first."""
    _, path = their_release(cls, tmp_path / f"{right}.pth")
    out = tmp_path / "export"
    args = ["--official", str(path), "--method", wrong, "--backbone", "test_convnext", "--out", str(out)]
    assert exit_code(export_entry.main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: a release of ") and f"pass --method {right}" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("size", ["0", "-3", "5000"])
def test_an_export_its_readers_would_refuse_is_not_written(size, tmp_path, capsys):
    _, path = their_release(DAC, tmp_path / "dac.pth")
    out = tmp_path / "export"
    args = ["--official", str(path), "--method", "dac", "--backbone", "test_convnext", "--out", str(out)]
    assert exit_code(export_entry.main, [*args, "--image-size", size]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--image-size {size}: expected a whole number of pixels" in err and "\n" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_every_export_is_read_back_before_it_gets_its_name(tmp_path, monkeypatch):
    """The writer runs its readers' checks on what it wrote: a folder they would refuse (here a format
    tag no reader knows) is not left behind under the export's name, nor half-written."""
    from mean_geo.errors import CheckpointError
    from mean_geo.inference import export_format
    from mean_geo.inference.export import export
    from tests.helpers.paths import FIXTURES

    monkeypatch.setattr(export_format, "EXPORT_FORMAT", "mean_geo/99")
    with pytest.raises(CheckpointError, match=r"export: not written, its readers would refuse it: .*mean_geo/99"):
        export(FIXTURES / "legacy_v1" / "last.ckpt", tmp_path / "export")
    assert list(tmp_path.iterdir()) == []
