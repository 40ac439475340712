"""Every config group option composes, and everything that can run here instantiates."""

import importlib.util
from pathlib import Path

import lightning as L
import pytest

from mean_geo.cli import CONF_DIR
from mean_geo.training.composition import (
    build_callbacks,
    build_datamodule,
    build_lit_module,
    build_trainer,
    eval_options,
    run_spec,
    to_plain,
)
from mean_geo.training.hardware import resolve_precision
from mean_geo.training.loggers import build_loggers
from tests.helpers.config import compose_config, quiet_overrides


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("dataset", options("dataset"))
def test_datasets(dataset, tmp_path, data_dir):
    cfg = compose_config("train", [f"dataset={dataset}", *quiet_overrides(tmp_path, data_dir)])
    dm = build_datamodule(cfg.dataset)
    assert isinstance(dm, L.LightningDataModule)
    assert dm.root.parent == Path(data_dir) or dm.root.parent.parent == Path(data_dir)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose_and_build_their_model(experiment, tmp_path, data_dir):
    cfg = compose_config(
        "train",
        [
            f"experiment={experiment}",
            "model.pretrained=false",
            "model.backbone=test_convnext",
            *quiet_overrides(tmp_path, data_dir),
        ],
    )
    build_datamodule(cfg.dataset)
    lit = build_lit_module(run_spec(cfg, 5), cfg.optim, eval_options(cfg.eval))
    if cfg.model.architecture == "dino":  # experiment=demo_dino: the backbone alone, InfoNCE alone
        assert lit.model.gee is None and lit.model.cea is None and cfg.loss.name == "sample4geo"
        return
    assert lit.model.gee is not None and lit.model.cea is not None
    assert cfg.loss.weight_cda == (0.75 if cfg.dataset.name == "sues200" else 1.3)


def test_zero_loss_weights_build_no_branch(tmp_path, data_dir):
    cfg = compose_config(
        "train", ["experiment=smoke", "loss.weight_ce=0", "loss.weight_cda=0", *quiet_overrides(tmp_path, data_dir)]
    )
    lit = build_lit_module(run_spec(cfg, 5), cfg.optim, eval_options(cfg.eval))
    assert lit.model.gee is None and lit.model.cea is None


@pytest.mark.parametrize("hardware", options("hardware"))
def test_hardware(hardware, tmp_path, data_dir):
    if hardware.startswith("slurm") and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher not installed (extra: slurm)")
    cfg = compose_config(
        "train",
        [f"hardware={hardware}", *quiet_overrides(tmp_path, data_dir)],
        return_hydra_config=hardware.startswith("slurm"),
    )
    if cfg.trainer.accelerator in ("cpu", "auto") and not hardware.startswith("slurm"):
        trainer = build_trainer(cfg.trainer, logger=False, callbacks=[])
        assert trainer.precision == resolve_precision(cfg.trainer.accelerator, cfg.trainer.precision)
        assert trainer.world_size == cfg.trainer.devices or cfg.trainer.strategy == "ddp_spawn"
    else:
        assert cfg.trainer.accelerator in ("gpu", "cpu") and "precision" in cfg.trainer
    if hardware.startswith("slurm"):
        assert "submitit" in cfg.hydra.launcher._target_


@pytest.mark.parametrize("logger", options("logger"))
def test_loggers(logger, tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    cfg = compose_config("train", [f"logger={logger}", *quiet_overrides(tmp_path, data_dir)])
    loggers = build_loggers(to_plain(cfg.logger))
    assert loggers and all(hasattr(lg, "log_metrics") for lg in loggers)
    if "wandb" in logger:
        import os

        assert os.environ["WANDB_MODE"] == "offline"  # no key: offline instead of failing


def test_callbacks(tmp_path, data_dir):
    cfg = compose_config("train", quiet_overrides(tmp_path, data_dir))
    names = {type(c).__name__ for c in build_callbacks(cfg.callbacks)}
    assert {"ModelCheckpoint", "LearningRateMonitor"} <= names
    assert cfg.callbacks.model_checkpoint.monitor == "val/d2s/R@1"


@pytest.mark.parametrize("debug", options("debug"))
def test_debug(debug, tmp_path, data_dir):
    cfg = compose_config("train", [f"debug={debug}", *quiet_overrides(tmp_path, data_dir)])
    build_trainer(cfg.trainer, logger=False, callbacks=[])


@pytest.mark.parametrize("search", options("hparams_search"))
def test_hparams_search(search, tmp_path, data_dir):
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        pytest.skip("hydra-optuna-sweeper not installed (extra: optuna)")
    cfg = compose_config(
        "train", [f"hparams_search={search}", *quiet_overrides(tmp_path, data_dir)], return_hydra_config=True
    )
    assert "optim.optimizer.lr" in cfg.hydra.sweeper.params


def test_eval_config_composes(tmp_path, data_dir):
    cfg = compose_config("eval", ["ckpt=x.ckpt", "dataset.root=/elsewhere", *quiet_overrides(tmp_path, data_dir)])
    assert cfg.ckpt == "x.ckpt" and cfg.dataset.root == "/elsewhere"


def test_config_groups_stay_in_their_lane():
    """Dataset files hold data settings only; the Trainer, the loss and the optimized metric are
    each defined once (recipes and experiments override values, they do not redefine blocks)."""
    import yaml

    conf = Path(CONF_DIR)
    shared = yaml.safe_load((conf / "shared" / "dataset.yaml").read_text())["dataset"]
    for path in (conf / "dataset").glob("*.yaml"):
        text = yaml.safe_load(path.read_text())
        assert set(text) == {"defaults", "dataset"} and text["defaults"] == ["/shared/dataset", "_self_"], path
        # what every dataset shares is written once: a dataset file restates none of it unchanged
        assert not {k for k, v in text["dataset"].items() if shared.get(k, object()) == v}, path
    for path in (conf / "hardware").glob("*.yaml"):  # the device lane: the Trainer (and a launcher) only
        assert set(yaml.safe_load(path.read_text())) - {"defaults"} <= {"trainer", "hydra"}, path
    texts = {p.relative_to(conf).as_posix(): p.read_text() for p in conf.rglob("*.yaml")}
    defines = lambda needle: sorted(n for n, t in texts.items() if needle in t)  # noqa: E731
    assert defines("_target_: lightning.pytorch.Trainer") == ["trainer/default.yaml"]
    assert defines("optimized_metric:") == ["train.yaml"]
    # the InfoNCE every method shares is written once; each loss file composes it
    assert defines("temperature: 0.07") == ["shared/infonce.yaml"]
    for root in ("train.yaml", "eval.yaml", "index.yaml"):
        assert "- trainer: default" in texts[root], root
    # the evaluation conventions and their defaults are written once, for train and eval alike
    assert defines("rerank_k1:") == ["eval/default.yaml"] and defines("drop_unmatched_gallery:") == [
        "eval/default.yaml"
    ]
    for root in ("train.yaml", "eval.yaml"):
        assert "- eval: default" in texts[root], root


def test_train_and_eval_compose_the_same_evaluation_conventions(tmp_path):
    train = compose_config("train", [*quiet_overrides(tmp_path, tmp_path)])
    evaluate = compose_config("eval", ["ckpt=x", *quiet_overrides(tmp_path, tmp_path)])
    submission = {k: v for k, v in evaluate.eval.items() if k.startswith("submission")}
    assert set(submission) == {"submission", "submission_queries", "submission_gallery", "submission_order"}
    assert {k: v for k, v in evaluate.eval.items() if k not in submission} == dict(train.eval)


#: the loss weights each method's recipe states
RECIPE_WEIGHTS = {
    "mean": {"weight_cda", "weight_infonce", "weight_ce"},
    "sample4geo": {"weight_infonce"},
    "dac": {"weight_infonce", "weight_ce", "weight_dsa"},
    "camp": {"weight_infonce", "weight_part_mse", "ece_weight"},
}


@pytest.mark.parametrize("method", sorted(RECIPE_WEIGHTS))
@pytest.mark.parametrize("dataset", ["university1652", "sues200"])
def test_a_papers_recipe_holds_every_number_of_its_training(method, dataset):
    """recipe/<method>/<dataset>.yaml is the one file to read for the authors' numbers."""
    import yaml

    recipe = yaml.safe_load((Path(CONF_DIR) / "recipe" / method / f"{dataset}.yaml").read_text())
    assert {"image_size", "batch_size"} <= set(recipe["dataset"])
    assert {"lr", "weight_decay"} <= set(recipe["optim"]["optimizer"]) and "warmup_fraction" in recipe["optim"][
        "scheduler"
    ]
    assert {"max_epochs", "gradient_clip_val", "gradient_clip_algorithm"} <= set(recipe["trainer"])
    assert RECIPE_WEIGHTS[method] <= set(recipe["loss"]) and recipe["model"]["pretrained"] is True


def test_a_dataset_of_your_own_without_a_recipe_composes(tmp_path, data_dir):
    """A dataset file in the user's config folder (hydra.searchpath) needs no recipe file: it gets
    the shared dataset keys and the generic defaults of optim/, loss/ and trainer/."""
    (tmp_path / "conf" / "dataset").mkdir(parents=True)
    (tmp_path / "conf" / "dataset" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /shared/dataset\n  - _self_\n"
        "dataset:\n  name: sues200\n  root: /data/mine\n  altitude: 150\n  image_size: 96\n  batch_size: 8\n"
    )
    cfg = compose_config(
        "train",
        [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "dataset=mine", *quiet_overrides(tmp_path, data_dir)],
    )
    default = compose_config("train", quiet_overrides(tmp_path, data_dir))
    assert (
        cfg.dataset.root == "/data/mine"
        and cfg.dataset.eval_batch_size == 64
        and cfg.dataset.directions == ["d2s", "s2d"]
    )
    assert cfg.optim.optimizer.lr == default.optim.optimizer.lr and cfg.trainer.gradient_clip_val == 100
    dm = build_datamodule(cfg.dataset)
    assert isinstance(dm, L.LightningDataModule) and dm.image_size == 96
