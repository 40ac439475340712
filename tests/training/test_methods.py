"""`method=sample4geo|dac|camp`: each baseline trains (smoke size), evaluates from its checkpoint,
exports and localizes through the same entry points as MEAN; its recipe is its authors' numbers;
gradient caching is exact for it (float64)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from mean_geo import eval as eval_entry
from mean_geo import train as train_entry
from mean_geo.index import build_index
from mean_geo.inference.export import export
from mean_geo.inference.loading import load_model
from mean_geo.inference.localization import localize
from mean_geo.losses import CAMPLoss, DACLoss, InfoNCELoss, Sample4GeoLoss
from mean_geo.models.peers import CAMP, DAC, Sample4Geo
from mean_geo.retrieval.index_store import read_index
from mean_geo.training.composition import build_lit_module, eval_options, run_spec
from mean_geo.training.grad_cache import grad_cached_backward
from mean_geo.training.index_pipeline import PartWriter
from tests.helpers.config import compose_config, quiet_overrides

#: (method, dataset) -> backbone, image size, pairs a step, epochs, loss weights (the authors' scripts)
AUTHORS = {
    ("sample4geo", "university1652"): ("convnext_base.fb_in22k_ft_in1k_384", 384, 128, 1, {"weight_infonce": 1.0}),
    ("sample4geo", "sues200"): ("convnext_base.fb_in22k_ft_in1k_384", 384, 128, 1, {"weight_infonce": 1.0}),
    ("dac", "university1652"): ("convnext_base.fb_in22k_ft_in1k", 384, 24, 1, {"weight_ce": 0.1, "weight_dsa": 0.6}),
    ("dac", "sues200"): ("convnext_base.fb_in22k_ft_in1k", 384, 24, 1, {"weight_ce": 0.1, "weight_dsa": 0.6}),
    ("camp", "university1652"): ("convnext_base.fb_in22k_ft_in1k", 384, 24, 1, {"weight_part_mse": 0.0}),
    ("camp", "sues200"): ("convnext_base.fb_in22k_ft_in1k", 384, 24, 1, {"weight_part_mse": 1.0}),
}


@pytest.mark.parametrize("method,dataset", sorted(AUTHORS))
def test_a_method_on_a_real_dataset_is_its_authors_recipe(method, dataset, tmp_path, data_dir):
    cfg = compose_config("train", [f"method={method}", f"dataset={dataset}", *quiet_overrides(tmp_path, data_dir)])
    backbone, size, batch, epochs, weights = AUTHORS[(method, dataset)]
    assert cfg.model.architecture == cfg.loss.name == method and cfg.model.backbone == backbone
    assert (cfg.dataset.image_size, cfg.dataset.batch_size, cfg.trainer.max_epochs) == (size, batch, epochs)
    assert {k: cfg.loss[k] for k in weights} == weights and cfg.loss.infonce.label_smoothing == 0.1
    assert (
        cfg.model.pretrained is True and cfg.optim.optimizer.lr == 1e-3 and cfg.optim.scheduler.warmup_fraction == 0.1
    )
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (100, "value")
    if method == "camp":
        assert cfg.model.position_scale == (0.6 if dataset == "university1652" else 0.1)
    jitter = cfg.dataset.get("color_jitter")
    assert (jitter is not None) == (method == "sample4geo")  # 0.15 everywhere; DAC and CAMP: MEAN's


def test_method_mean_is_the_default_and_composes_what_it_did():
    default = compose_config("train", ["hydra.run.dir=/tmp/x"])
    explicit = compose_config("train", ["method=mean", "hydra.run.dir=/tmp/x"])
    assert default == explicit and default.model.architecture == "mean" and default.loss.weight_cda == 0.75


@pytest.mark.parametrize("method", ["sample4geo", "dac", "camp"])
def test_a_method_trains_evaluates_exports_and_localizes(method, tmp_path, data_dir):
    cfg = compose_config("train", ["experiment=smoke", f"method={method}", *quiet_overrides(tmp_path, data_dir)])
    metrics = train_entry.run(cfg)
    out = tmp_path / "out"
    written = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test/d2s/R@1"] <= 100 and written["metrics"]["test/d2s/R@1"] == metrics["test/d2s/R@1"]
    ckpt = Path(written["best_checkpoint"])
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["spec"]
    assert stored["model"]["architecture"] == stored["loss"]["name"] == method
    # eval from the checkpoint: the same numbers as the test after training
    ev = compose_config("eval", [f"ckpt={ckpt}", *quiet_overrides(tmp_path / "eval", data_dir)])
    again = eval_entry.run(ev)
    assert again["test/d2s/R@1"] == pytest.approx(metrics["test/d2s/R@1"])
    # the field's other conventions embed through the same path for every method
    conventions = ["eval.flip_tta=true", "eval.multi_query=mean", "eval.rerank=true", "eval.plots=false"]
    ev = compose_config("eval", [f"ckpt={ckpt}", *conventions, *quiet_overrides(tmp_path / "conv", data_dir)])
    other = eval_entry.run(ev)
    assert {"test/d2s_rerank/R@1", "test/d2s_multi_mean/R@1", "test/s2d_rerank/AP"} <= set(other)
    # export: the retrieval network only, embedding as the checkpoint does
    folder = export(ckpt, tmp_path / "export")
    exported, from_ckpt = load_model(folder), load_model(ckpt)
    assert (
        type(exported.model).__name__ == type(from_ckpt.model).__name__
        and exported.fingerprint == from_ckpt.fingerprint
    )
    # index a gallery with the export and localize held-out drone photos
    world = Path(cfg.dataset.root)
    gallery = world / "Testing" / "150" / "query_satellite"
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False, callbacks=[PartWriter()]
    )
    index_file = build_index(gallery, folder, tmp_path / "gallery.safetensors", trainer, batch_size=4, num_workers=0)
    photos = sorted(p for p in (world / "Testing" / "150" / "query_drone").rglob("*") if p.is_file())[:3]
    results = localize(photos, read_index(index_file), folder, k=2)
    assert len(results) == 3 and all(len(matches) == 2 for matches in results)


def _float64_batch(b: int = 4, size: int = 64):
    g = torch.Generator().manual_seed(0)
    drone = torch.randn(b, 3, size, size, generator=g, dtype=torch.float64)
    return drone, drone + 0.3 * torch.randn(b, 3, size, size, generator=g, dtype=torch.float64), torch.arange(b)


@pytest.mark.parametrize("method", ["sample4geo", "dac", "camp"])
def test_gradient_caching_is_exact_for_the_baselines(method):
    """ConvNeXt (no batch statistics) + DAC's heads and DSA with their BatchNorms / CAMP's parts and
    learnt weights: chunked gradients equal the whole batch's."""
    torch.manual_seed(0)
    infonce = {"infonce": InfoNCELoss(gather_distributed=False)}
    if method == "sample4geo":
        model, loss = Sample4Geo(backbone="test_convnext"), Sample4GeoLoss(**infonce)
    elif method == "dac":
        model, loss = DAC(4, backbone="test_convnext", head_dropout=0.0), DACLoss(**infonce)
    else:
        model, loss = (
            CAMP(4, backbone="test_convnext"),
            CAMPLoss(weight_part_mse=1.0, block_infonce=InfoNCELoss(gather_distributed=False), **infonce),
        )
    model, loss = model.double().train(), loss.double()
    drone, sat, labels = _float64_batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss(*model.forward_pair(drone, sat), labels)["loss"].backward()
    params = [*model.named_parameters(), *(("loss." + n, p) for n, p in loss.named_parameters())]
    expected = {n: p.grad.clone() for n, p in params if p.grad is not None}
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True), loss.zero_grad(set_to_none=True)
    grad_cached_backward(model, loss, drone, sat, labels, chunk_size=1)
    got = {n: p.grad.clone() for n, p in params if p.grad is not None}
    assert got.keys() == expected.keys() and any(n.startswith("loss.") for n in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("method, weights", [("dac", []), ("camp", []), ("camp", ["loss.weight_blocks=0"])])
def test_a_baseline_trains_under_ddp(method, weights, tmp_path, data_dir):
    """hardware=ddp_cpu (2 gloo processes): every parameter of the method gets a gradient on every
    rank (no find_unused_parameters), the InfoNCE negatives (and CAMP's part blocks) gathered; a
    zero-weighted term's learnt scalars (CAMP's w and block temperature) are frozen, not left unused."""
    overrides = ["experiment=smoke", f"method={method}", "hardware=ddp_cpu", "dataset.batch_size=2", *weights]
    cfg = compose_config(
        "train", [*overrides, "trainer.max_steps=2", "test=false", *quiet_overrides(tmp_path, data_dir)]
    )
    train_entry.run(cfg)
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["spec"]["model"]["architecture"] == method


ZEROED = {
    "mean": ["weight_infonce", "weight_ce", "weight_cda"],
    "sample4geo": [],
    "dac": ["weight_infonce", "weight_ce", "weight_dsa"],
    "camp": ["weight_infonce", "weight_blocks", "weight_part_mse"],
}


@pytest.mark.parametrize("method, zeroed", [(m, w) for m, ws in ZEROED.items() for w in [None, *ws]])
def test_every_parameter_left_trainable_gets_a_gradient(method, zeroed, tmp_path):
    """What DDP without find_unused_parameters needs, for every method with any one term weighted 0:
    after freeze_untrained (the meta-device dry run), a real step gives every trainable parameter a
    gradient, and only parameters that got none were frozen."""
    overrides = ["experiment=smoke", f"method={method}", *([f"loss.{zeroed}=0"] if zeroed else [])]
    cfg = compose_config("train", [*overrides, *quiet_overrides(tmp_path, tmp_path)])
    lit = build_lit_module(run_spec(cfg, 5), cfg.optim, eval_options(cfg.eval))
    torch.manual_seed(0)
    drone, sat = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    lit.loss(*lit.model.forward_pair(drone, sat), torch.arange(4))["loss"].backward()
    unused = {n for n, p in lit.named_parameters() if p.grad is None}
    lit.zero_grad(set_to_none=True)
    frozen = set(lit.freeze_untrained())
    assert frozen == unused
    lit.loss(*lit.model.forward_pair(drone, sat), torch.arange(4))["loss"].backward()
    assert all(p.grad is not None for p in lit.parameters() if p.requires_grad)
    if zeroed in ("weight_infonce", "weight_blocks"):  # a learnt temperature with nothing to learn from
        assert frozen
