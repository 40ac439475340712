"""Refinement inside the evaluation, on the GTA-UAV-layout synthetic world at 256 px: with a
retrieval that ranks each photo's best tile among its top 5, accepted photos land within metres of
their true footprint centre (the world's JSON), and the metrics agree with the per-query rows."""

import csv
import json

import numpy as np
import pytest
import torch

from mean_geo.data import gta_uav
from mean_geo.data.eval_sets import EvalKey, padded_rows
from mean_geo.localization.refine import RefineSettings
from mean_geo.retrieval.evaluator import CollectedSet, DirectionResult
from mean_geo.retrieval.search import topk_search
from mean_geo.synthetic.gta_map import write_gta_world
from mean_geo.training.refined_eval import RefineRequest, refine_direction


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gta") / "world"
    root.mkdir()
    write_gta_world(root, photos=24, image_size=256, seed=4)
    return root


def view_and_positives(world, rank_of_truth: int) -> tuple[DirectionResult, dict]:
    """An evaluation's D->S result as the evaluator hands it over (the photos' map metres and
    positive tiles riding with the queries), and each photo's positive tile names."""
    records = json.loads((world / gta_uav.json_name("same_area", "test")).read_text())
    records += json.loads((world / gta_uav.json_name("same_area", "train")).read_text())
    records = [r for r in records if r["pair_pos_sate_img_list"]][:10]
    tiles = sorted(p.name for p in (world / "satellite").glob("*.png"))
    paths, places, q = [], [], []
    rng = np.random.default_rng(0)
    for r in records:
        best = max(
            zip(r["pair_pos_semipos_sate_img_list"], r["pair_pos_semipos_sate_weight_list"], strict=True),
            key=lambda x: x[1],
        )[0]
        paths.append(world / r["drone_img_dir"] / r["drone_img_name"])
        places.append(best)
        # a retrieval that puts the best tile at rank ``rank_of_truth`` among random others
        scores = rng.uniform(0, 0.5, len(tiles))
        order = np.argsort(-scores)
        truth = tiles.index(best)
        scores[truth] = scores[order[rank_of_truth - 1]] + 1e-3 if rank_of_truth > 1 else 1.0
        q.append(scores)
    eye = torch.eye(len(tiles))
    n = len(tiles)
    gallery = CollectedSet(
        EvalKey("d2s", "gallery"),
        eye,
        torch.arange(n),
        torch.arange(n),
        [world / "satellite" / t for t in tiles],
        tiles,
    )
    truth = {
        "position_m": torch.tensor([r["drone_loc_x_y"] for r in records], dtype=torch.float64),
        "positives": padded_rows([[tiles.index(t) for t in r["pair_pos_sate_img_list"]] for r in records]),
    }
    embeddings = torch.tensor(np.array(q), dtype=torch.float32)
    query = CollectedSet(
        EvalKey("d2s", "query"), embeddings, torch.zeros(len(paths)), torch.arange(len(paths)), paths, places, truth
    )
    scores, top = topk_search(embeddings, eye, k=5)
    positives = {path: frozenset(r["pair_pos_sate_img_list"]) for path, r in zip(paths, records, strict=True)}
    return DirectionResult(query, gallery, gallery, scores, top), positives


def test_refined_positions_land_on_the_true_footprint_centre(world):
    view, positives = view_and_positives(world, rank_of_truth=3)
    request = RefineRequest(RefineSettings(top_n=5), "sift")
    metrics, rows = refine_direction(view, gta_uav.tile_pixel_m, request, request.build())
    accepted = [r for r in rows if r["refined"]]
    assert len(accepted) >= 7, [r["reason"] for r in rows]
    for r in accepted:
        assert float(r["error_m"]) < 3.0, r
    # by hand from the rows: the row's R@1 counts re-ranked top-1 tiles that are positives
    errors = np.array([float(r["error_m"]) for r in rows])
    retrieval = np.array([float(r["retrieval_error_m"]) for r in rows])
    assert metrics["test/d2s_refined/median_m"] == pytest.approx(np.median(errors), abs=0.01)  # rows: 2 decimals
    assert metrics["test/d2s_refined/retrieval_median_m"] == pytest.approx(np.median(retrieval), abs=0.01)
    assert metrics["test/d2s_refined/refined"] == pytest.approx(100 * len(accepted) / len(rows))
    hits = [r["tile"] in positives[view.query.paths[i]] for i, r in enumerate(rows)]
    assert metrics["test/d2s_refined/R@1"] == pytest.approx(100 * np.mean(hits))
    assert metrics["test/d2s_refined/R@1"] >= 70  # the truth was third: inliers bring it first
    assert metrics["test/d2s_refined/median_m"] < metrics["test/d2s_refined/retrieval_median_m"] / 4


def test_without_ground_truth_the_answers_are_still_written(world, tmp_path):
    view, _ = view_and_positives(world, rank_of_truth=1)
    request = RefineRequest(RefineSettings(top_n=2), "orb")
    metrics, rows = refine_direction(view, None, request, request.build())
    assert metrics == {} and len(rows) == len(view.query.paths)
    assert all(r["tile_col"] for r in rows if r["refined"]) and "error_m" not in rows[0]
    from mean_geo.training.refined_eval import write_refined_rows

    write_refined_rows(tmp_path / "r.csv", rows)
    assert len(list(csv.DictReader((tmp_path / "r.csv").open()))) == len(rows)
