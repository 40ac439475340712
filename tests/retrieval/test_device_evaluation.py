"""Every evaluation path with its tensors on a (fake) CUDA device gives the CPU's numbers.

On a GPU the gathered embeddings live on the device while positions, positive sets and groups come
from the CPU; GTA-UAV's evaluation mixed them and crashed after a whole training.  The fake device
(:mod:`tests.helpers.fake_device`) refuses every mix CUDA refuses, so such a crash shows here.
"""

import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from mean_geo.files.checkpoints import read_checkpoint
from mean_geo.retrieval.conventions import evaluate_conventions
from mean_geo.retrieval.multi_query import query_groups
from mean_geo.retrieval.positive_sets import evaluate_positive_sets
from mean_geo.retrieval.rerank import RerankSettings
from mean_geo.training.composition import build_evaluation, eval_options
from mean_geo.training.lit_module import MEANLitModule
from tests.data.test_gta_uav import gta_tree
from tests.helpers.fake_device import FakeCuda, FakeCudaMode, to_fake


def test_the_fake_device_refuses_what_cuda_refuses():
    with FakeCudaMode():
        x = torch.arange(6).cuda()
        assert x.device.type == "cuda" and isinstance(torch.zeros(2, device=x.device), FakeCuda)
        assert (x[torch.tensor([0, 2])] == torch.tensor([0, 2]).cuda()).all()  # CPU indices: allowed
        with pytest.raises(RuntimeError, match="same device"):
            torch.zeros(6, dtype=torch.long).scatter_reduce(0, x, x, reduce="amin")
        with pytest.raises(TypeError, match="numpy"):
            x.numpy()
        assert x.cpu().numpy().tolist() == list(range(6))


def _unit(n: int, dim: int = 8) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim), dim=1)


@pytest.mark.parametrize("multi_query", ["none", "mean", "max", "vote"])
@pytest.mark.parametrize("drop_unmatched", [True, False])
def test_every_convention_on_the_device_gives_the_cpu_numbers(multi_query, drop_unmatched):
    torch.manual_seed(0)
    q_ids, g_ids = torch.arange(6).repeat_interleave(4), torch.arange(8)
    q, g = _unit(len(q_ids)), _unit(len(g_ids))
    q_latlon, g_latlon = torch.rand(len(q_ids), 2), torch.rand(len(g_ids), 2)  # on the CPU, as datasets give them
    altitudes = torch.tensor([150, 200] * (len(q_ids) // 2))
    options = {
        "ks": (1, 5),
        "drop_unmatched_gallery": drop_unmatched,
        "multi_query": multi_query,
        "rerank": RerankSettings(k1=4, k2=2, lambda_value=0.3),
        "position_metrics": "denseuav",
        "q_latlon": q_latlon,
        "g_latlon": g_latlon,
    }
    cpu = evaluate_conventions("d2s", q, q_ids, g, g_ids, groups=query_groups(q_ids, altitudes), **options)
    with FakeCudaMode():
        fq, fq_ids, fg, fg_ids, f_alt = to_fake((q, q_ids, g, g_ids, altitudes))
        found = evaluate_conventions("d2s", fq, fq_ids, fg, fg_ids, groups=query_groups(fq_ids, f_alt), **options)
    assert found.metrics == cpu.metrics
    assert found.curves == cpu.curves


def test_positive_sets_on_the_device_give_the_cpu_numbers():
    torch.manual_seed(0)
    q, g = _unit(12), _unit(7)
    positives = [[i % 7, (i + 3) % 7] for i in range(12)]
    q_xy, g_xy = 100 * torch.randn(12, 2), 100 * torch.randn(7, 2)
    cpu = evaluate_positive_sets(q, g, positives, (1, 5), q_xy, g_xy)
    with FakeCudaMode():
        found = evaluate_positive_sets(*to_fake((q, g)), positives, (1, 5), q_xy, g_xy)
    assert found == cpu


def evaluate_twice(lit: MEANLitModule, dm) -> tuple[dict, dict]:
    """The test stage's metrics from the collected embeddings on the CPU, then from the same
    embeddings on the fake device, as a GPU run computes them (the truth from the batches on the CPU)."""
    found = {}

    def on_both_devices(stage: str) -> None:
        found["cpu"] = lit.evaluator.compute(stage).metrics
        with FakeCudaMode():
            found["device"] = lit.evaluator.compute(stage, device="cuda").metrics
        lit.evaluator.reset()

    lit._finish_eval = on_both_devices
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    trainer.test(lit, datamodule=dm, verbose=False)
    return found["cpu"], found["device"]


def smoke_checkpoint(smoke_run):
    out, _, _ = smoke_run
    return read_checkpoint(json.loads((out / "metrics.json").read_text())["best_checkpoint"], "ckpt")


def test_gta_uav_evaluation_on_the_device_gives_the_cpu_numbers(smoke_run, tmp_path):
    """Point 3 of the GPU issue: positive sets and planar positions beside device embeddings."""
    root = gta_tree(tmp_path / "gta")
    dataset = {"name": "gta_uav", "root": str(root), "image_size": 64, "directions": ["d2s"]}
    dm, options = build_evaluation(dataset, eval_options({}))
    ckpt = smoke_checkpoint(smoke_run)
    lit = MEANLitModule(spec=ckpt.spec, eval_options=options)
    lit.load_state_dict(ckpt.state_dict)
    cpu, device = evaluate_twice(lit, dm)
    assert "test/d2s/Dis@1" in cpu and "test/d2s/SDM@1" in cpu
    assert device == cpu


def test_a_university_layout_evaluation_with_every_option_on_the_device(smoke_run):
    """The smoke checkpoint with multi-query, re-ranking, flip-TTA and corrupted queries."""
    ckpt = smoke_checkpoint(smoke_run)
    eval_cfg = {
        "multi_query": "mean",
        "rerank": True,
        "rerank_k1": 4,
        "rerank_k2": 2,
        "flip_tta": True,
        "corruptions": ["blur"],
        "severities": [1],
    }
    dm, options = build_evaluation({**ckpt.spec["dataset"], "num_workers": 0}, eval_options(eval_cfg))
    lit = MEANLitModule(spec=ckpt.spec, eval_options=options)
    lit.load_state_dict(ckpt.state_dict)
    cpu, device = evaluate_twice(lit, dm)
    assert any("rerank" in k for k in cpu) and any("multi_mean" in k for k in cpu) and any("corrupt" in k for k in cpu)
    assert device == cpu
