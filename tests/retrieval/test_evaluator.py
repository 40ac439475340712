"""The evaluator without a Trainer: batches in, the protocol's numbers out, the same on 1, 2 or 3
processes (gloo) whatever the shards, DDP's padding repeats dropped by index."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from mean_geo.data.eval_sets import EvalKey
from mean_geo.retrieval.conventions import evaluate_conventions
from mean_geo.retrieval.evaluate import evaluate
from mean_geo.retrieval.evaluator import RetrievalEvaluator
from mean_geo.retrieval.multi_query import query_groups
from mean_geo.retrieval.options import EvalOptions
from mean_geo.retrieval.positive_sets import evaluate_positive_sets
from mean_geo.retrieval.rerank import RerankSettings

OPTIONS = EvalOptions(
    ks=(1, 3),
    drop_unmatched_gallery=True,
    multi_query="mean",
    rerank=RerankSettings(k1=4, k2=2),
    corruptions=(("fog", 1),),
)
N_PLACES = 6


def _sets() -> dict[EvalKey, dict]:
    """Two directions' query and gallery sets and one corrupted query set, each image with its
    embedding (a fixed function of the set and index: any rank computes the same), place, path and truth."""
    g = torch.Generator().manual_seed(0)
    out = {}
    q_places = torch.arange(N_PLACES - 1).repeat_interleave(3)  # the last place has no query (dropped)
    g_places = torch.arange(N_PLACES)
    sizes = {"query": q_places, "gallery": g_places}
    for direction in ("d2s", "s2d"):
        for role, places in sizes.items():
            if direction == "s2d":
                places = sizes["gallery" if role == "query" else "query"]
            n = len(places)
            centre = F.normalize(torch.randn(N_PLACES, 16, generator=g), dim=1)
            embedding = F.normalize(centre[places] + 0.9 * torch.randn(n, 16, generator=g), dim=1)
            latlon = torch.stack([30 + places * 1e-3, 120 + places * 1e-3], dim=1).double()
            latlon[1] = math.nan  # one image the coordinates table does not know
            out[EvalKey(direction, role)] = {
                "embedding": embedding,
                "place": places,
                "index": torch.arange(n),
                "path": [f"{direction}/{role}/{i}.jpg" for i in range(n)],
                "location": [f"{int(p):04d}" for p in places],
                "altitude": torch.tensor([150.0, 200.0] * (n // 2) + [150.0] * (n % 2), dtype=torch.float64),
                "latlon": latlon,
            }
    clean = out[EvalKey("d2s", "query")]
    noisy = F.normalize(clean["embedding"] + 0.5 * torch.randn(clean["embedding"].shape, generator=g), dim=1)
    out[EvalKey("d2s", "query", ("fog", 1))] = {**clean, "embedding": noisy}
    return out


def _batch(found: dict, rows: list[int]) -> tuple[torch.Tensor, dict]:
    pick = torch.tensor(rows, dtype=torch.long)
    batch = {k: v[pick] if isinstance(v, torch.Tensor) else [v[i] for i in rows] for k, v in found.items()}
    return batch.pop("embedding"), batch


def _feed(evaluator: RetrievalEvaluator, shards: dict[EvalKey, list[int]], batch_size: int) -> None:
    for key, found in _sets().items():
        rows = shards[key]
        for start in range(0, len(rows), batch_size):
            embeddings, batch = _batch(found, rows[start : start + batch_size])
            evaluator.update(key, embeddings, batch)


def _single_process_report():
    evaluator = RetrievalEvaluator(OPTIONS)
    _feed(evaluator, {k: list(range(len(v["place"]))) for k, v in _sets().items()}, batch_size=4)
    return evaluator.compute("test")


def test_the_report_is_the_protocol_code_on_the_collected_sets():
    report = _single_process_report()
    sets = _sets()
    q, g = sets[EvalKey("d2s", "query")], sets[EvalKey("d2s", "gallery")]
    expected = evaluate_conventions(
        "d2s",
        q["embedding"],
        q["place"],
        g["embedding"],
        g["place"],
        ks=OPTIONS.ks,
        drop_unmatched_gallery=True,
        multi_query="mean",
        groups=query_groups(q["place"], q["altitude"].long()),  # two altitudes: a group per place and altitude
        rerank=OPTIONS.rerank,
        q_latlon=q["latlon"],
        g_latlon=g["latlon"],
    )
    for name, values in expected.metrics.items():
        assert {k: report.metrics[f"test/{name}/{k}"] for k in values} == values
    assert report.conventions == ["d2s", "d2s_rerank", "d2s_multi_mean", "d2s_multi_mean_rerank", "s2d", "s2d_rerank"]
    fog = evaluate(
        sets[EvalKey("d2s", "query", ("fog", 1))]["embedding"], q["place"], g["embedding"], g["place"], (1, 3)
    )
    assert report.corruptions == {("fog", 1): fog}
    assert report.metrics["test/d2s_corrupt/mean_drop/AP"] == report.metrics["test/d2s/AP"] - fog["AP"]
    d2s = report.directions["d2s"]
    assert d2s.gallery.locations == [f"{p:04d}" for p in range(N_PLACES - 1)]  # the unmatched place dropped
    assert len(d2s.full_gallery.paths) == N_PLACES and d2s.top.shape == (15, min(OPTIONS.ranking_k, N_PLACES - 1))
    assert torch.equal(d2s.top, (q["embedding"] @ g["embedding"][:5].T).topk(5, dim=1).indices)
    assert d2s.query.altitudes[:2] == [150, 200] and torch.isnan(d2s.query.latlon[1]).all()


def test_padding_repeats_are_dropped_and_the_order_restored():
    evaluator = RetrievalEvaluator(OPTIONS)
    # every set shuffled, its first two images sent again (what DDP's sampler pads with)
    shards = {}
    for key, found in _sets().items():
        n = len(found["place"])
        shards[key] = [*torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist(), 0, 1]
    _feed(evaluator, shards, batch_size=5)
    assert evaluator.compute("test").metrics == _single_process_report().metrics


def test_positive_sets_come_from_the_batch():
    torch.manual_seed(1)
    q, g = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(7, 8), dim=1)
    positives = torch.tensor([[0, 3], [1, -1], [2, -1], [4, 5], [6, -1]])  # gallery indices, -1 padding
    q_xy, g_xy = torch.rand(5, 2).double() * 100, torch.rand(7, 2).double() * 100
    evaluator = RetrievalEvaluator(EvalOptions(ks=(1, 5), drop_unmatched_gallery=False))
    for key, emb, extra in (
        (EvalKey("d2s", "gallery"), g, {"position_m": g_xy}),
        (EvalKey("d2s", "query"), q, {"position_m": q_xy, "positives": positives}),
    ):
        n = len(emb)
        batch = {"place": torch.zeros(n, dtype=torch.long), "index": torch.arange(n), **extra}
        batch.update(path=[f"{key.role}{i}" for i in range(n)], location=[f"t{i}" for i in range(n)])
        evaluator.update(key, emb, batch)
    report = evaluator.compute("test")
    rows = [[0, 3], [1], [2], [4, 5], [6]]
    expected = evaluate_positive_sets(q, g, rows, (1, 5), q_xy, g_xy)
    assert {k.split("/")[-1]: v for k, v in report.metrics.items()} == expected
    assert report.conventions == ["d2s"] and len(report.directions["d2s"].gallery.paths) == 7


def _rank(rank: int, world_size: int, init_file: str, uneven: bool, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        shards = {}
        for key, found in _sets().items():
            n = len(found["place"])
            if uneven:  # plainly uneven: rank r takes a contiguous block of its own size
                bounds = [round(n * r * r / world_size**2) for r in range(world_size + 1)]
                shards[key] = list(range(bounds[rank], bounds[rank + 1]))
            else:  # what Lightning's loaders do: DistributedSampler, equal counts padded with repeats
                shards[key] = list(DistributedSampler(range(n), world_size, rank, shuffle=False))
        evaluator = RetrievalEvaluator(OPTIONS)
        _feed(evaluator, shards, batch_size=2 + rank)  # another batch size on every rank
        report = evaluator.compute("test")
        if rank == 0:
            d2s = report.directions["d2s"]
            torch.save({"metrics": report.metrics, "paths": d2s.query.paths, "top": d2s.top}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("world_size", "uneven"), [(2, False), (3, True)])
def test_gloo_processes_give_the_single_process_metrics_exactly(world_size, uneven, tmp_path):
    out = tmp_path / "report.pt"
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the children start with it: two cores, several processes
    try:
        mp.spawn(_rank, args=(world_size, str(tmp_path / "init"), uneven, str(out)), nprocs=world_size)
    finally:
        os.environ.pop("OMP_NUM_THREADS") if old is None else os.environ.update(OMP_NUM_THREADS=old)
    found = torch.load(out, weights_only=False)
    single = _single_process_report()
    assert found["metrics"] == single.metrics
    assert [str(p) for p in found["paths"]] == [str(p) for p in single.directions["d2s"].query.paths]
    assert torch.equal(found["top"], single.directions["d2s"].top)
