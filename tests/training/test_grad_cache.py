"""Gradient caching: the gradients of a batch computed chunk by chunk equal the un-chunked ones
(float64, tight tolerance) where the model has no batch statistics; MEAN's BatchNorm branches
deviate by a measured amount."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from mean_geo.errors import ConfigError
from mean_geo.losses import CDALoss, InfoNCELoss, MEANLoss
from mean_geo.models.mean import MEAN, MEANOutput
from mean_geo.training import grad_cache
from mean_geo.training.grad_cache import grad_cached_backward
from tests.helpers.config import compose_config, quiet_overrides

B, SIZE = 6, 32


class LayerNormPairs(nn.Module):
    """A small two-view model: a LayerNorm "backbone" with dropout (so the replayed RNG matters) and
    branches with a BatchNorm (whole-batch statistics, as without chunks): every MEAN loss term."""

    def __init__(self, classes: int = B, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 4, stride=4), nn.Flatten(), nn.LayerNorm(8 * 64), nn.GELU(), nn.Dropout(dropout)
        )
        self.embed = nn.Linear(8 * 64, 16)
        self.head = nn.Sequential(nn.BatchNorm1d(16), nn.Linear(16, classes))
        self.align = nn.Linear(64, 5)

    def features(self, x: torch.Tensor):
        h = self.body(x)
        return h.view(-1, 8, 64), h, self.embed(h)

    def features_pair(self, drone, satellite):
        return self.features(drone), self.features(satellite)

    def branches(self, fmap, pooled, embedding) -> MEANOutput:
        return MEANOutput(embedding=embedding, logits=[self.head(embedding)], aligned=self.align(fmap))

    def branches_pair(self, drone, satellite):
        return self.branches(*drone), self.branches(*satellite)

    def forward_pair(self, drone, satellite):
        return self.branches_pair(*self.features_pair(drone, satellite))


def batch(seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    drone = torch.randn(B, 3, SIZE, SIZE, generator=g, dtype=dtype)
    return drone, drone + 0.3 * torch.randn(B, 3, SIZE, SIZE, generator=g, dtype=dtype), torch.arange(B)


def mean_loss(**weights) -> MEANLoss:
    w = {"weight_cda": 1.3, "weight_infonce": 1.0, "weight_ce": 0.1, **weights}
    return MEANLoss(**w, infonce=InfoNCELoss(learnable_temperature=True, gather_distributed=False), cda=CDALoss())


def gradients(model: nn.Module, loss: nn.Module) -> dict[str, torch.Tensor]:
    named = [*model.named_parameters(), *(("loss." + n, p) for n, p in loss.named_parameters())]
    return {n: p.grad.clone() for n, p in named if p.grad is not None}


def plain_step(model, loss, drone, sat, labels) -> tuple[dict, dict]:
    torch.manual_seed(123)  # the same dropout masks in the branches (GEE's heads) for both steps
    model.zero_grad(set_to_none=True), loss.zero_grad(set_to_none=True)
    terms = loss(*model.forward_pair(drone, sat), labels)
    terms["loss"].backward()
    return gradients(model, loss), {k: v.detach() for k, v in terms.items()}


def cached_step(model, loss, drone, sat, labels, chunk: int, seed: int | None = 123) -> tuple[dict, dict]:
    if seed is not None:
        torch.manual_seed(seed)
    model.zero_grad(set_to_none=True), loss.zero_grad(set_to_none=True)
    terms = grad_cached_backward(model, loss, drone, sat, labels, chunk)
    return gradients(model, loss), terms


def assert_same(a: dict, b: dict, rtol: float = 1e-10) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=1e-12, msg=name)


@pytest.mark.parametrize("chunk", [1, 2, 4, 6])
def test_chunked_gradients_equal_the_whole_batch_for_a_layernorm_model(chunk):
    torch.manual_seed(0)
    model, loss = LayerNormPairs().double(), mean_loss().double()
    drone, sat, labels = batch()
    expected, expected_terms = plain_step(model, loss, drone, sat, labels)
    got, terms = cached_step(model, loss, drone, sat, labels, chunk)
    assert "loss.infonce.logit_scale" in got  # the learnable temperature gets its gradient
    assert_same(got, expected)
    for name in expected_terms:
        torch.testing.assert_close(terms[name], expected_terms[name], rtol=1e-12, atol=0)


def test_mean_with_a_layernorm_backbone_is_exact_branches_and_all():
    """The paper's setting: timm's (tiny) ConvNeXt, PEE/GEE/CEA with their BatchNorms, all losses."""
    torch.manual_seed(0)
    for pee in ("released", "multiscale"):
        model = MEAN(B, backbone="test_convnext", pee=pee, cea_proj_dim=16, cea_out_dim=16).double().train()
        loss = mean_loss().double()
        drone, sat, labels = batch()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        expected, _ = plain_step(model, loss, drone, sat, labels)
        model.load_state_dict(state)  # the same running statistics for both
        got, _ = cached_step(model, loss, drone, sat, labels, chunk=2)
        assert_same(got, expected)


def test_dropout_masks_are_replayed(monkeypatch):
    """With dropout, the reference is the backbone run chunk by chunk in one graph, then the
    branches on the whole batch: equal only if the second backbone pass of every chunk draws the
    masks of its first pass."""
    model, loss = LayerNormPairs(dropout=0.3).double().train(), mean_loss().double()
    drone, sat, labels = batch()

    def by_chunks_in_one_graph():
        torch.manual_seed(1)
        model.zero_grad(set_to_none=True), loss.zero_grad(set_to_none=True)
        pieces = [model.features_pair(drone[p], sat[p]) for p in grad_cache.chunks(B, 2)]
        whole = [torch.cat([piece[view][i] for piece in pieces]) for view in (0, 1) for i in range(3)]
        loss(model.branches(*whole[:3]), model.branches(*whole[3:]), labels)["loss"].backward()
        return gradients(model, loss)

    def cached():
        torch.manual_seed(1)
        return cached_step(model, loss, drone, sat, labels, chunk=2, seed=None)[0]

    assert_same(cached(), by_chunks_in_one_graph())
    monkeypatch.setattr(grad_cache.RandomState, "replayed", lambda self: contextlib.nullcontext())
    with pytest.raises(AssertionError):  # without the replay the gradients are wrong
        assert_same(cached(), by_chunks_in_one_graph())


def test_a_batchnorm_backbone_deviates_by_a_measured_amount_and_counts_its_statistics_once():
    """A BatchNorm backbone (the demo's ResNet) normalises each chunk by its own statistics: the
    gradient changes (measured at the demo's scale in docs/model.md).  The no-grad pass leaves
    running statistics untouched: the backbone's count one update per chunk and view, the
    branches' one per view."""
    torch.manual_seed(0)
    model = MEAN(B, backbone="test_resnet", cea_proj_dim=16, cea_out_dim=16).double().train()
    loss = mean_loss().double()
    drone, sat, labels = batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected, _ = plain_step(model, loss, drone, sat, labels)
    model.load_state_dict(state)
    counts = lambda part: [int(m.num_batches_tracked) for m in part.modules() if isinstance(m, nn.BatchNorm2d)]  # noqa: E731
    backbone_before, branches_before = counts(model.backbone), counts(model.gee) + counts(model.cea)
    got, _ = cached_step(model, loss, drone, sat, labels, chunk=3)
    assert [a - b for a, b in zip(counts(model.backbone), backbone_before, strict=True)] == [4] * len(backbone_before)
    branches_after = counts(model.gee) + counts(model.cea)
    assert [a - b for a, b in zip(branches_after, branches_before, strict=True)] == [2] * len(branches_before)
    names = [n for n in expected if n.startswith("backbone.")]
    flat = lambda g: torch.cat([g[n].flatten() for n in names])  # noqa: E731
    deviation = (flat(got) - flat(expected)).norm() / flat(expected).norm()
    assert deviation > 1e-3  # not exact, so never silently called exact


def test_chunk_size_is_checked_before_training_starts():
    from mean_geo.training.lit_module import MEANLitModule

    model, loss = LayerNormPairs().double(), mean_loss().double()
    drone, sat, labels = batch()
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ConfigError, match="grad_cache.chunk_size"):
            grad_cached_backward(model, loss, drone, sat, labels, bad)
        with pytest.raises(ConfigError, match="grad_cache.chunk_size"):
            MEANLitModule(MEAN(4, backbone="test_convnext"), MEANLoss(), grad_cache_chunk=bad)


def test_training_with_gradient_caching_follows_the_unchunked_run(tmp_path, data_dir):
    """`python -m mean_geo.train experiment=smoke grad_cache.chunk_size=2` (manual optimisation:
    clipping, schedule, checkpoints, the data's random flips) ends where the un-chunked run ends, up
    to float32 rounding: the smoke model is timm's test_convnext, without batch statistics.  Adam's
    eps is raised for the comparison: with 1e-8 it turns gradients at rounding level (some CEA
    weights get nearly none) into ±lr steps, and the two runs drift apart by ~lr for that reason alone."""
    from mean_geo import train as train_entry

    states = {}
    for name, extra in (("plain", []), ("cached", ["grad_cache.chunk_size=2"])):
        overrides = ["experiment=smoke", "eval.plots=false", "+optim.optimizer.eps=0.01", *extra]
        train_entry.run(compose_config("train", [*overrides, *quiet_overrides(tmp_path / name, data_dir)]))
        states[name] = torch.load(tmp_path / name / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    plain, cached = states["plain"], states["cached"]
    assert cached["global_step"] == plain["global_step"] > 5
    assert cached["lr_schedulers"][0]["last_epoch"] == plain["lr_schedulers"][0]["last_epoch"]
    assert cached["state_dict"].keys() == plain["state_dict"].keys()
    for key, value in plain["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(cached["state_dict"][key], value, rtol=1e-5, atol=1e-5, msg=key)
    initial = compose_config("train", ["experiment=smoke"])  # and training did move the weights
    assert initial.optim.optimizer.lr > 0


@pytest.mark.slow
def test_gradient_caching_under_ddp_with_two_processes(tmp_path, data_dir):
    """hardware=ddp_cpu (2 gloo processes, spawned): the per-backward all-reduce is held back and
    the gradients averaged once per step; training, the CSV log and the test stage all complete.
    (Measured once against the same DDP run without chunks: last weights equal to 5e-7.)"""
    from mean_geo import train as train_entry

    overrides = ["experiment=smoke", "hardware=ddp_cpu", "dataset.batch_size=2", "grad_cache.chunk_size=1"]
    metrics = train_entry.run(
        compose_config("train", [*overrides, "eval.plots=false", *quiet_overrides(tmp_path, data_dir)])
    )
    assert 0 <= metrics["test/d2s/R@1"] <= 100
    header = (next((tmp_path / "out" / "csv").glob("*/metrics.csv"))).read_text().splitlines()[0]
    assert "train/loss" in header and "test/d2s/R@1" in header


@pytest.mark.parametrize("chunk", [None, 2])
def test_fp16_amp_with_a_grad_scaler_trains_as_on_a_gpu(chunk, tmp_path, data_dir, monkeypatch):
    """`hardware=gpu_amp`'s precision path on the CPU: fp16 autocast and a GradScaler (CPU's) that
    starts at the authors' 2**10, in automatic optimisation and with gradient caching (manual: the
    step unscales, then clips, then steps or skips).  The scale after training is in the
    checkpoint; the weights stay finite."""
    from mean_geo import train as train_entry
    from mean_geo.training import hardware

    monkeypatch.setattr(hardware, "uses_gpu", lambda accelerator: True)
    gpu_plugin = hardware.amp_plugin
    monkeypatch.setattr(hardware, "amp_plugin", lambda: gpu_plugin("cpu"))
    overrides = ["experiment=smoke", "trainer.precision=16-mixed", "trainer.max_steps=3", "test=false"]
    overrides += [f"grad_cache.chunk_size={chunk}"] if chunk else []
    train_entry.run(compose_config("train", [*overrides, *quiet_overrides(tmp_path, data_dir)]))
    state = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3
    assert 0 < state["MixedPrecision"]["scale"] <= 2.0**10
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
