"""Metres on the ground: distance metrics against hand-computed cases, the synthetic world's
coordinates, and the metrics in metrics.json and in `localize`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mean_geo import eval as eval_entry
from mean_geo.data.coordinates import read_coordinates_csv
from mean_geo.retrieval.distances import distance_metrics, haversine_m, sdm_at_k
from mean_geo.synthetic.writer import COORDINATES, WorldSpec, place_coordinates, split_ids
from tests.helpers.config import compose_config, quiet_overrides

M_PER_DEG_LAT = 6_371_008.8 * math.pi / 180  # a degree of latitude on the mean-radius sphere


def test_haversine_against_hand_computed_distances():
    assert float(haversine_m(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0], dtype=torch.float64))) == pytest.approx(
        111_195.08, rel=1e-7
    )
    assert float(haversine_m(torch.tensor([10.0, 5.0]), torch.tensor([10.0, 5.0]))) == 0.0
    f64 = {"dtype": torch.float64}
    north = float(haversine_m(torch.tensor([31.0, 121.0], **f64), torch.tensor([31.001, 121.0], **f64)))
    assert north == pytest.approx(0.001 * M_PER_DEG_LAT, rel=1e-6)


def test_sdm_follows_game4locs_definition():
    d = torch.tensor([[0.0, 1000.0, 2000.0]])
    expected = (3 * 1 + 2 * math.exp(-1) + 1 * math.exp(-2)) / 6
    assert float(sdm_at_k(d, 3)) == pytest.approx(expected, rel=1e-12)
    assert float(sdm_at_k(d, 1)) == 1.0


def test_distance_metrics_of_a_hand_made_case():
    """Three tiles 100 m apart along a meridian; query A is at tile 0 and ranks 0, 1, 2; query B
    is at tile 2 but ranks tile 1 first (100 m off), then 2, then 0."""
    step = 100 / M_PER_DEG_LAT
    tiles = torch.tensor([[31.0, 121.0], [31.0 + step, 121.0], [31.0 + 2 * step, 121.0]], dtype=torch.float64)
    gallery = torch.eye(3)
    queries = torch.tensor([[1.0, 0.5, 0.1], [0.1, 1.0, 0.9]])
    truth = torch.stack([tiles[0], tiles[2]])
    got = distance_metrics(queries, truth, gallery, tiles, ks=(1, 2, 3))
    assert got["Dis@1"] == pytest.approx((0 + 100) / 2, abs=1e-6)
    assert got["Dis@2"] == pytest.approx(((0 + 100) / 2 + (100 + 0) / 2) / 2, abs=1e-6)
    assert got["Dis@3"] == pytest.approx(((0 + 100 + 200) / 3 + (100 + 0 + 200) / 3) / 2, abs=1e-6)
    assert got["Acc@25m"] == 50.0 and got["Acc@50m"] == 50.0 and got["Acc@100m"] == pytest.approx(100.0)
    sdm_a = (3 + 2 * math.exp(-0.1) + math.exp(-0.2)) / 6
    sdm_b = (3 * math.exp(-0.1) + 2 + math.exp(-0.2)) / 6
    assert got["SDM@3"] == pytest.approx(100 * (sdm_a + sdm_b) / 2, rel=1e-9)


def test_the_synthetic_world_lies_in_a_believable_region():
    spec = WorldSpec("university1652", locations=30, seed=3, image_size=64)
    places = place_coordinates(spec)
    ids = [loc for role in ("train", "test", "distractor") for loc in split_ids(spec)[role]]
    assert sorted(places) == sorted(ids) and places == place_coordinates(spec)  # every place, deterministic
    coords = torch.tensor(list(places.values()), dtype=torch.float64)
    d = haversine_m(coords[:, None], coords[None, :]) + torch.eye(len(coords)) * 1e9
    assert float(d.min()) > 700  # places 1.2 km apart, jittered by at most 200 m each
    assert float(d[d < 1e9].max()) < 30_000  # one city
    assert all(abs(lat - 31.23) < 0.2 and abs(lon - 121.47) < 0.2 for lat, lon in places.values())


def test_worlds_are_written_with_their_coordinates_file(sues_world):
    key, table = read_coordinates_csv(sues_world / COORDINATES)
    assert key == "place"
    places = {p.name for p in (sues_world / "Testing" / "150" / "gallery_satellite").iterdir()}
    assert places <= set(table)


@pytest.mark.slow
def test_eval_reports_metres_when_the_world_knows_where_places_are(smoke_run, tmp_path, data_dir):
    out, _, _ = smoke_run
    ckpt = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    overrides = [f"ckpt={ckpt}", "eval.plots=false"]
    eval_entry.run(compose_config("eval", [*overrides, *quiet_overrides(tmp_path, data_dir)]))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert {"test/d2s/Dis@1", "test/d2s/Dis@5", "test/d2s/SDM@5", "test/d2s/Acc@50m"} <= set(metrics)
    # a right top-1 is 0 m off and every wrong one is hundreds of metres off: Acc@50m is R@1
    assert metrics["test/d2s/Acc@50m"] == pytest.approx(metrics["test/d2s/R@1"], abs=1e-9)
    if metrics["test/d2s/R@1"] < 100:
        assert metrics["test/d2s/Dis@1"] > 100
