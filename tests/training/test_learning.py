"""Learning actually happens: a short training run beats chance and the untrained model by far."""

import lightning as L
import pytest

from mean_geo.training.composition import build_evaluation, build_lit_module, eval_options, run_spec
from tests.helpers.config import LEARNING_OVERRIDES, compose_config, quiet_overrides


@pytest.mark.slow
def test_short_training_is_far_above_chance_and_the_untrained_model(learned_run, tmp_path, data_dir):
    _, metrics, _ = learned_run
    cfg = compose_config("train", [*LEARNING_OVERRIDES, *quiet_overrides(tmp_path, data_dir)])
    L.seed_everything(cfg.seed)
    dm, options = build_evaluation(cfg.dataset, eval_options(cfg.eval))
    dm.prepare_data()
    untrained = build_lit_module(run_spec(cfg, dm.num_classes), cfg.optim, options)
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(untrained, datamodule=dm, verbose=False)
    before = untrained.last_report.metrics["test/d2s/R@1"]
    after = metrics["test/d2s/R@1"]
    chance = 100 / 8  # 8 held-out places in the gallery (MEAN protocol)
    assert after >= 3 * chance  # measured: 62.5 %
    assert after >= before + 20
    assert metrics["test/d2s/AP"] > untrained.last_report.metrics["test/d2s/AP"] + 15
    assert metrics["test/s2d/R@1"] > 2 * chance
