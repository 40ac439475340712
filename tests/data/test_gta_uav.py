"""GTA-UAV read as it ships: a miniature tree written here from the release's facts (tile names,
map geometry, JSON records), the weighted InfoNCE and the mutually exclusive batches against hand
computations, evaluation by positive sets, check, and real runs of both splits."""

import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mean_geo.check import extra_checks
from mean_geo.data import gta_uav
from mean_geo.data.samplers import exclusive_batches
from mean_geo.errors import DatasetLayoutError
from mean_geo.losses.objectives import InfoNCELoss
from mean_geo.retrieval.positive_sets import evaluate_positive_sets
from tests.helpers.cli import run_module, train_tiny


def _png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (shade % 256, (7 * shade) % 256, (13 * shade) % 256)).save(buf, format="PNG")
    return buf.getvalue()


def gta_tree(root):
    """4x4 zoom-7 tiles under 2x2 zoom-6 tiles; a photo over each zoom-7 tile: positive that tile
    (IoU 0.6), semi-positive also its zoom-6 parent (IoU 0.2).  Cross-area: the western half trains."""
    (root / "drone" / "images").mkdir(parents=True)
    (root / "satellite").mkdir()  # a flat folder of every zoom
    for z, n in ((6, 2), (7, 4)):
        for x in range(n):
            for y in range(n):
                (root / "satellite" / f"{z}_0_{x}_{y}.png").write_bytes(_png(10 * z + 3 * x + y))
    records = []
    for k, (x, y) in enumerate((x, y) for x in range(4) for y in range(4)):
        name = f"{200 + 100 * (k % 3)}_0001_{k + 1:010d}.png"
        (root / "drone" / "images" / name).write_bytes(_png(3 * x + y + 70))
        tile, parent = f"7_0_{x}_{y}.png", f"6_0_{x // 2}_{y // 2}.png"
        records.append(
            {
                "drone_img_dir": "drone/images",
                "drone_img_name": name,
                "drone_loc_x_y": list(gta_uav.tile_centre_m(tile)),
                "sate_img_dir": "satellite",
                "pair_pos_sate_img_list": [tile],
                "pair_pos_sate_weight_list": [0.6],
                "pair_pos_sate_loc_x_y_list": [list(gta_uav.tile_centre_m(tile))],
                "pair_pos_semipos_sate_img_list": [tile, parent],
                "pair_pos_semipos_sate_weight_list": [0.6, 0.2],
                "pair_pos_semipos_sate_loc_x_y_list": [list(gta_uav.tile_centre_m(t)) for t in (tile, parent)],
                "drone_metadata": {"height": 200.0},
            }
        )
    west = [r for r in records if r["drone_loc_x_y"][0] < 24576 / 2**6 * 0.45]  # the first zoom-6 column
    east = [r for r in records if r not in west]
    for split, train, test in (("cross-area", west, east), ("same-area", records[::2], records[1::2])):
        (root / f"{split}-drone2sate-train.json").write_text(json.dumps(train))
        (root / f"{split}-drone2sate-test.json").write_text(json.dumps(test))
    return root


@pytest.fixture
def tree(tmp_path):
    return gta_tree(tmp_path / "GTA-UAV-LR")


def test_tile_centres_follow_the_map_geometry():
    assert gta_uav.tile_centre_m("4_0_6_13.png") == pytest.approx((4492.8, 9331.2))  # the README's record
    side = 24576 / 2**7 * 0.45  # 86.4 m
    assert gta_uav.tile_centre_m("7_128_0_0.png") == pytest.approx((side, side))  # offset half a tile
    with pytest.raises(DatasetLayoutError, match="not a GTA-UAV tile name"):
        gta_uav.tile_centre_m("4_6_13.png")


def test_records_are_read_and_a_bad_one_is_named(tree):
    records = gta_uav.read_records(tree, "cross_area", "train")
    assert len(records) == 8 and records[0].semipositives[1][1] == 0.2 and records[0].altitude == 200
    path = tree / "same-area-drone2sate-test.json"
    raw = json.loads(path.read_text())
    for broken, says in (
        ({k: v for k, v in raw[2].items() if k != "drone_loc_x_y"}, "record 2: no 'drone_loc_x_y'"),
        ({**raw[2], "pair_pos_semipos_sate_weight_list": [0.6]}, "record 2: 'pair_pos_semipos_sate_weight_list'"),
        ({**raw[2], "pair_pos_sate_img_list": ["7_1_2.png"]}, "record 2: 'pair_pos_sate_img_list' must be"),
        ({**raw[2], "drone_img_name": "missing.png"}, "record 2: its photo"),
        # numbers of the right type but no value: json reads NaN, Infinity and true as numbers
        ({**raw[2], "drone_loc_x_y": [float("nan"), 10.0]}, "record 2: 'drone_loc_x_y' must be [x, y]"),
        ({**raw[2], "drone_loc_x_y": [5.0, float("inf")]}, "record 2: 'drone_loc_x_y' must be [x, y]"),
        ({**raw[2], "drone_loc_x_y": [True, 1.0]}, "record 2: 'drone_loc_x_y' must be [x, y]"),
        ({**raw[2], "pair_pos_semipos_sate_weight_list": [float("nan"), 0.2]}, "record 2: 'pair_pos_semipos"),
        ({**raw[2], "pair_pos_semipos_sate_weight_list": [True, 0.2]}, "record 2: 'pair_pos_semipos"),
    ):
        path.write_text(json.dumps(raw[:2] + [broken] + raw[3:]))
        with pytest.raises(DatasetLayoutError) as exc:
            gta_uav.read_records(tree, "same_area", "test")
        assert str(exc.value).startswith(f"{path}: {says}") and "\n" not in str(exc.value)
    path.write_text("[{")
    with pytest.raises(DatasetLayoutError, match="not valid JSON"):
        gta_uav.read_records(tree, "same_area", "test")


def test_weighted_infonce_is_label_smoothing_by_overlap():
    torch.manual_seed(0)
    a, b, w = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64), torch.rand(5).double()
    loss = InfoNCELoss(temperature=0.1, gather_distributed=False, pair_weight_k=5.0).double()
    got = loss(a, b, w).detach()
    s = float(loss.logit_scale.detach().exp()) * F.normalize(a, dim=1) @ F.normalize(b, dim=1).T

    def side(m):  # Game4Loc: (1-e)(-S_ii + LSE_i) + e(-mean_j S_ij + LSE_i), e = 1 - sigmoid(k w)
        total = 0.0
        for i in range(5):
            e = 1 - 1 / (1 + math.exp(-5.0 * float(w[i])))
            lse = float(torch.logsumexp(m[i], 0))
            total += (1 - e) * (lse - float(m[i, i])) + e * (lse - float(m[i].mean()))
        return total / 5

    assert float(got) == pytest.approx((side(s) + side(s.T)) / 2, rel=1e-12)
    # without weights: the plain symmetric InfoNCE with its label smoothing
    plain = loss(a, b).detach()
    target = torch.arange(5)
    expected = (F.cross_entropy(s, target, label_smoothing=0.1) + F.cross_entropy(s.T, target, label_smoothing=0.1)) / 2
    assert float(plain) == pytest.approx(float(expected), rel=1e-12)


def test_mutually_exclusive_batches_keep_linked_pairs_apart():
    # photo d links tiles; a pair (d, t) keeps out of its batch every pair of d, of t, of d's tiles
    links = {"d0": {"a", "P"}, "d1": {"b", "P"}, "d2": {"c", "Q"}, "d3": {"e", "Q"}, "d4": {"f", "R"}}
    pairs = [(d, t) for d, ts in links.items() for t in sorted(ts)]
    drones_of = {t: {d for d, ts in links.items() if t in ts} for ts in links.values() for t in ts}
    keys = [frozenset({("d", d), ("t", t)}) for d, t in pairs]
    blocks = [
        k | {("t", x) for x in links[d]} | {("d", x) for x in drones_of[t]}
        for k, (d, t) in zip(keys, pairs, strict=True)
    ]
    for epoch in range(20):
        for batch in exclusive_batches(keys, blocks, 3, seed=1, epoch=epoch):
            drones = [pairs[i][0] for i in batch]
            tiles = [pairs[i][1] for i in batch]
            assert len(set(drones)) == 3
            for i, d in zip(batch, drones, strict=True):  # no tile of another in-batch photo's links
                assert not any(t in links[d] for j, t in zip(batch, tiles, strict=True) if j != i)


def test_positive_sets_against_hand_computed_ranks():
    g = torch.eye(4)
    q = F.normalize(torch.tensor([[0.9, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.2]]), dim=1)
    # query 0 ranks 1, 0, (2, 3); its positives {0, 2} sit at ranks 1 and 2 -> AP = (1/2 + 2/3) / 2
    # query 1 ranks 2, 3, ...; its positive {3} at rank 1 -> AP = 1/2
    xy_q = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    xy_g = torch.tensor([[3.0, 4.0], [0.0, 100.0], [0.0, 1000.0], [600.0, 800.0]])
    found = evaluate_positive_sets(q, g, [[0, 2], [3]], ks=(1, 2), query_xy_m=xy_q, gallery_xy_m=xy_g)
    assert found["R@1"] == 0.0 and found["R@2"] == 100.0
    assert found["AP"] == pytest.approx(100 * ((1 / 2 + 2 / 3) / 2 + 1 / 2) / 2)
    # top-1 of query 0 is 100 m away, of query 1 1000 m: Dis@1 = 550; SDM@1 = mean exp(-0.001 d)
    assert found["Dis@1"] == pytest.approx(550.0)
    assert found["SDM@1"] == pytest.approx(100 * (math.exp(-0.1) + math.exp(-1.0)) / 2)
    # Dis@3: query 0's top 3 are items 1, 0, 2 (ties keep gallery order); query 1's are 2, 3, 0
    assert found["Dis@3"] == pytest.approx(((100 + 5 + 1000) / 3 + (1000 + 1000 + 5) / 3) / 2)


def test_check_counts_and_names_a_missing_tile(tree, tmp_path):
    assert extra_checks("gta_uav", str(tree)) == []
    (tree / "satellite" / "6_0_1_1.png").unlink()
    found = extra_checks("gta_uav", str(tree))
    assert found and all("6_0_1_1.png not in satellite/" in line for line in found)
    out = run_module(["-m", "mean_geo.check", "dataset=gta_uav", f"dataset.root={tree}"], cwd=tmp_path)
    assert out.returncode == 1 and "drone/images: 16 images, official 33,763" in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("split", ["cross_area", "same_area"])
def test_a_miniature_copy_trains_and_evaluates_by_positive_sets(tree, tmp_path, split):
    out = train_tiny("gta_uav", tree, tmp_path, f"dataset.split={split}", "dataset.batch_size=2")
    assert out.returncode == 0, out.stderr[-3000:]
    (metrics_file,) = (tmp_path / "logs").rglob("metrics.json")
    payload = json.loads(metrics_file.read_text())
    metrics = payload["metrics"]
    for key in ("R@1", "R@5", "AP", "SDM@1", "SDM@3", "SDM@5", "Dis@1", "Dis@3", "Dis@5"):
        assert f"test/d2s/{key}" in metrics, sorted(metrics)
    assert 0 <= metrics["test/d2s/R@1"] <= 100 and metrics["test/d2s/Dis@1"] >= 0
    directions = payload["protocol"]["fingerprint"]["directions"]
    assert directions["d2s"]["queries"] == 8 and directions["d2s"]["gallery"] == 20  # every tile, all zooms
    # mean_geo.eval rebuilds the layout and its split from the checkpoint: the same numbers
    (ckpt,) = list((tmp_path / "logs").rglob("last.ckpt")) or list((tmp_path / "logs").rglob("epoch_*.ckpt"))
    out = run_module(["-m", "mean_geo.eval", f"ckpt={ckpt}", "eval.plots=false", "hydra.run.dir=eval_run"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    again = json.loads((tmp_path / "eval_run" / "metrics.json").read_text())["metrics"]
    assert again["test/d2s/AP"] == pytest.approx(metrics["test/d2s/AP"], abs=1e-3)
    if split == "cross_area":  # refinement: retrieval-only and refined metres side by side
        args = ["-m", "mean_geo.eval", f"ckpt={ckpt}", "eval.plots=false", "eval.refine=true", "eval.refine_top_n=3"]
        out = run_module([*args, "hydra.run.dir=eval_refined"], tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        refined = json.loads((tmp_path / "eval_refined" / "metrics.json").read_text())
        for key in ("R@1", "median_m", "retrieval_median_m", "Acc@5m", "retrieval_Acc@5m", "refined"):
            assert f"test/d2s_refined/{key}" in refined["metrics"]
        assert refined["metrics"]["test/d2s/AP"] == pytest.approx(metrics["test/d2s/AP"], abs=1e-3)
        fingerprint = refined["protocol"]["fingerprint"]
        assert fingerprint["refine"]["top_n"] == 3 and "d2s_refined" in fingerprint["conventions"]
        assert (tmp_path / "eval_refined" / "refined_d2s.csv").is_file()
        out = run_module([*args[:-1], "eval.refine_matcher=loftr", "hydra.run.dir=bad"], tmp_path)
        assert (
            out.returncode == 2
            and "eval.refine_matcher_weights" in out.stderr
            and not (tmp_path / "bad" / "metrics.json").exists()
        )


def test_training_batches_carry_the_ious_and_exclude_linked_pairs(tree):
    from mean_geo.training.composition import build_datamodule

    dm = build_datamodule(
        {
            "name": "gta_uav",
            "root": str(tree),
            "image_size": 32,
            "batch_size": 3,
            "num_workers": 0,
            "directions": ["d2s"],
        }
    )
    dm.setup("fit")
    assert dm.num_classes == 8 + 2  # the training photos' zoom-7 tiles and their zoom-6 parents
    batches = list(dm.train_dataloader())
    assert batches
    linked = {r.path.name: {t for t, _ in r.semipositives} for r in dm.records("train")}
    for batch in batches:
        drone, labels, weights = batch["drone"], batch["label"], batch["weight"]
        assert drone.dtype == torch.uint8 and drone.shape == (3, 3, 32, 32)
        assert set(weights.tolist()) <= {0.6, 0.2} and len(set(labels.tolist())) == 3
    for batch in dm.train_dataloader().batch_sampler:  # no photo twice, no tile of another photo's links
        pairs = [dm.train_set.pairs[i] for i in batch]
        assert len({photo for photo, _, _ in pairs}) == len(pairs)
        for photo, tile, _ in pairs:
            assert not any(tile.name in linked[other.name] for other, _, _ in pairs if other != photo)


def test_footprint_iou_against_hand_computed_overlaps():
    from mean_geo.synthetic.gta_map import footprint_iou

    square = np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 10.0], [10.0, 0.0]])
    assert footprint_iou(square, (0, 0, 10, 10)) == pytest.approx(1.0)
    assert footprint_iou(square, (5, 0, 15, 10)) == pytest.approx(50 / 150)  # half of each overlaps
    assert footprint_iou(square, (2, 2, 4, 4)) == pytest.approx(4 / 100)  # a tile inside the footprint
    assert footprint_iou(square, (20, 20, 30, 30)) == 0.0
    diamond = np.array([[5.0, 0.0], [0.0, 5.0], [5.0, 10.0], [10.0, 5.0]])  # area 50, inside the box
    assert footprint_iou(diamond, (0, 0, 10, 10)) == pytest.approx(50 / 100)


def test_the_synthetic_world_writes_the_release_layout_with_exact_ious(tmp_path):
    from mean_geo.synthetic.gta_map import HFOV_DEG, footprint, footprint_iou, tiles
    from mean_geo.synthetic.writer import WorldSpec, write_world

    root = write_world(WorldSpec("gta_uav", locations=40, image_size=32), tmp_path / "world", progress=False)
    boxes = dict(tiles())
    assert sorted(p.name for p in gta_uav.satellite_tiles(root)) == sorted(boxes) and len(boxes) == 340
    assert extra_checks("gta_uav", str(root)) == []  # every record well formed, every tile present
    cross = gta_uav.read_records(root, "cross_area", "train") + gta_uav.read_records(root, "cross_area", "test")
    same = gta_uav.read_records(root, "same_area", "train") + gta_uav.read_records(root, "same_area", "test")
    assert sorted(r.name for r in cross) == sorted(r.name for r in same) and len(cross) > 20
    raw = {r["drone_img_name"]: r for r in json.loads((root / gta_uav.json_name("same_area", "train")).read_text())}
    for r in gta_uav.read_records(root, "same_area", "train"):
        meta = raw[r.name]["drone_metadata"]
        corners = footprint(r.loc_m, meta["height"], math.radians(meta["drone_yaw"]))
        for tile, iou in r.semipositives:  # the world's geometry gives the written IoUs back
            assert iou == pytest.approx(footprint_iou(corners, boxes[tile]), abs=2e-4) and iou > 0.14
        assert set(r.positives) == {t for t, w in r.semipositives if w > 0.39}
        width = 2 * meta["height"] * math.tan(math.radians(HFOV_DEG / 2))
        assert 100 < width < 500  # 100-300 m above the ground
    # cross-area: the western half of the map trains
    half = 2 * 24576 / 2**4 * 0.45 / 2
    assert all(r.loc_m[0] < half for r in gta_uav.read_records(root, "cross_area", "train"))


def test_conventions_that_positive_sets_do_not_have_are_refused(tree, tmp_path):
    out = train_tiny("gta_uav", tree, tmp_path, "dataset.batch_size=2", "eval.rerank=true")
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "evaluated by positive sets" in errors[0], out.stderr[-2000:]
    out = train_tiny("gta_uav", tree, tmp_path, "dataset.directions=[d2s,s2d]")
    assert out.returncode == 2 and "GTA-UAV is evaluated drone -> satellite" in out.stderr, out.stderr[-2000:]
