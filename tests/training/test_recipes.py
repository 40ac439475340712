"""`python -m mean_geo.train dataset=<real dataset>` is the paper's recipe on the best hardware present."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

from mean_geo.errors import ConfigError
from mean_geo.models.backbone import create_timm_backbone, hub_weights_reachable
from mean_geo.training import composition
from mean_geo.training.hardware import AMP_INIT_SCALE, amp_plugin, cpu_supports_bf16, resolve_precision
from tests.helpers.cli import run_hydra_entry
from tests.helpers.config import compose_config, quiet_overrides

PAPER = {
    # dataset: (image size, pairs per step, epochs, CDA weight)   (spec §5)
    "sues200": (384, 24, 1, 0.75),
    "university1652": (384, 64, 2, 1.3),
}


@pytest.mark.parametrize("dataset", PAPER)
def test_a_real_dataset_gets_the_papers_recipe_on_auto_hardware(dataset, tmp_path, data_dir):
    cfg = compose_config("train", [f"dataset={dataset}", *quiet_overrides(tmp_path, data_dir)])
    size, batch, epochs, cda = PAPER[dataset]
    assert (cfg.dataset.image_size, cfg.dataset.batch_size, cfg.trainer.max_epochs) == (size, batch, epochs)
    assert (cfg.loss.weight_cda, cfg.loss.weight_infonce, cfg.loss.weight_ce) == (cda, 1.0, 0.1)
    assert cfg.model.pretrained is True and cfg.model.backbone == "convnext_tiny.fb_in22k_ft_in1k"
    assert cfg.optim.optimizer.lr == 1e-3 and cfg.optim.scheduler.warmup_fraction == 0.1
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.precision == "auto"
    explicit = compose_config("train", [f"dataset={dataset}", "hardware=cpu", *quiet_overrides(tmp_path, data_dir)])
    assert (explicit.trainer.accelerator, explicit.trainer.precision) == ("cpu", "32-true")


def test_synthetic_demo_and_smoke_keep_random_init(tmp_path, data_dir):
    for experiment in ("smoke", "demo"):
        cfg = compose_config("train", [f"experiment={experiment}", *quiet_overrides(tmp_path, data_dir)])
        assert cfg.model.pretrained is False and cfg.trainer.accelerator == "cpu"


def test_precision_auto_resolves_to_the_best_the_device_has():
    assert resolve_precision("gpu", "auto") == "16-mixed"
    assert resolve_precision("cpu", "auto") == ("bf16-mixed" if cpu_supports_bf16() else "32-true")
    expected_auto = "16-mixed" if torch.cuda.is_available() else resolve_precision("cpu", "auto")
    assert resolve_precision("auto", "auto") == expected_auto
    assert resolve_precision("gpu", "bf16-mixed") == "bf16-mixed"  # explicit wins


def test_fp16_amp_starts_its_grad_scaler_at_the_authors_scale():
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a CUDA scaler is disabled without a GPU
    plugin = amp_plugin(device)
    assert plugin.precision == "16-mixed" and plugin.scaler.get_scale() == AMP_INIT_SCALE == 1024


@pytest.mark.parametrize(
    "user_plugins, keeps_ours",
    [
        ([], True),
        ([{"_target_": "lightning.pytorch.plugins.environments.LightningEnvironment"}], True),
        ([{"_target_": "lightning.pytorch.plugins.MixedPrecision", "precision": "16-mixed", "device": "cuda"}], False),
    ],
)
def test_a_users_plugins_keep_the_authors_grad_scaler_unless_one_sets_the_precision(
    user_plugins, keeps_ours, monkeypatch
):
    """``trainer.plugins=[a cluster environment]`` silently replaced the 2**10 GradScaler by
    Lightning's 2**16 one; a precision plugin of the user's own still wins."""
    built = {}
    monkeypatch.setattr(composition.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(composition, "instantiate", lambda cfg, **kwargs: built.update(cfg=cfg, **kwargs))
    composition.build_trainer(
        {
            "_target_": "lightning.pytorch.Trainer",
            "accelerator": "gpu",
            "precision": "16-mixed",
            "plugins": user_plugins,
        },
        callbacks=[],
        logger=False,
    )
    ours = [p for p in built["plugins"] if isinstance(p, MixedPrecision)]
    assert len(ours) == int(keeps_ours) and all(p.scaler.get_scale() == AMP_INIT_SCALE for p in ours)
    assert ("precision" in built["cfg"]) is not keeps_ours


def test_offline_pretrained_weights_fail_at_once_with_the_two_ways_out(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not hub_weights_reachable("convnext_tiny.fb_in22k_ft_in1k")
    # online mode, but the hub does not answer (a closed port on this machine): one quick probe
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert not hub_weights_reachable("convnext_tiny.fb_in22k_ft_in1k", timeout=2)
    with pytest.raises(ConfigError) as exc:
        create_timm_backbone("convnext_tiny.fb_in22k_ft_in1k", pretrained=True)
    assert "model.weights_file=" in str(exc.value) and "model.pretrained=false" in str(exc.value)
    assert hub_weights_reachable("test_convnext")  # no hub weights named: nothing to probe


def test_headline_command_offline_ends_in_one_line(sues_world, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from mean_geo import train as train_entry

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    args = ["dataset=sues200", f"dataset.root={sues_world}"]
    line = run_hydra_entry(train_entry.main, args, tmp_path, monkeypatch, capsys)
    assert "model.weights_file=" in line and "model.pretrained=false" in line


def test_common_trainer_flags_need_no_plus_and_fast_dev_run_runs(tmp_path, data_dir):
    from mean_geo import train as train_entry

    flags = ["trainer.fast_dev_run=true", "trainer.limit_val_batches=1", "trainer.max_steps=3"]
    cfg = compose_config("train", ["experiment=smoke", *flags, *quiet_overrides(tmp_path, data_dir)])
    assert cfg.trainer.fast_dev_run is True
    metrics = train_entry.run(cfg)  # fast_dev_run: one batch of each, no test, no checkpoint
    assert all(k.startswith("val/") for k in metrics) and not (tmp_path / "out" / "metrics.json").exists()


def test_early_stopping_callback_config(tmp_path, data_dir):
    from lightning.pytorch.callbacks import EarlyStopping

    from mean_geo.training.composition import build_callbacks

    cfg = compose_config("train", ["callbacks=early_stopping", *quiet_overrides(tmp_path, data_dir)])
    (stopper,) = [c for c in build_callbacks(cfg.callbacks) if isinstance(c, EarlyStopping)]
    assert stopper.monitor == "val/d2s/R@1" and stopper.patience == 3
    assert {"model_checkpoint", "lr_monitor"} <= set(cfg.callbacks)


def test_validation_uses_held_out_training_places_never_the_test_split(tmp_path, data_dir):
    from mean_geo.training.composition import build_datamodule

    cfg = compose_config("train", ["experiment=smoke", *quiet_overrides(tmp_path, data_dir)])
    dm = build_datamodule(cfg.dataset)
    dm.prepare_data()
    dm.setup("fit")
    val_places = set(dm.val_split.locations)
    assert len(val_places) == 2 and not val_places & set(dm.train_split.locations)
    # (SUES-200 galleries hold every place as distractors; the test *queries* are the test places)
    queries = [ds for ds, (_, role, _) in zip(dm.eval_datasets, dm.eval_keys(), strict=True) if role == "query"]
    assert not val_places & {r.location for ds in queries for r in ds.records}
    assert {r.location for ds in dm.val_datasets for r in ds.records} == val_places
    assert dm.num_classes == 5  # 7 training places, 2 held out


def test_input_statistics_come_from_the_backbone_and_are_recorded(tmp_path, data_dir, smoke_run):
    from mean_geo.inference.loading import load_model
    from mean_geo.training.composition import dataset_settings

    paper = compose_config("train", ["dataset=sues200", *quiet_overrides(tmp_path, data_dir)])
    assert dataset_settings(paper)["mean"] == [0.485, 0.456, 0.406]  # ConvNeXt: ImageNet
    smoke = compose_config("train", ["experiment=smoke", *quiet_overrides(tmp_path, data_dir)])
    assert dataset_settings(smoke)["mean"] == [0.5, 0.5, 0.5]  # timm's test_convnext
    explicit = compose_config(
        "train",
        [
            "experiment=smoke",
            "+dataset.mean=[0.4,0.4,0.4]",
            "+dataset.std=[0.2,0.2,0.2]",
            *quiet_overrides(tmp_path, data_dir),
        ],
    )
    assert dataset_settings(explicit)["std"] == [0.2, 0.2, 0.2]
    out, _, _ = smoke_run
    loaded = load_model(out / "checkpoints" / "last.ckpt")
    assert (loaded.mean, loaded.std) == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # recorded, used by index/localize
