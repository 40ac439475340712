"""Index a synthetic gallery with a trained smoke model, localize drone photos, export and reload."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from mean_geo import localize as loc
from mean_geo.data.coordinates import read_coordinates_csv
from mean_geo.data.datasets import load_rgb
from mean_geo.data.transforms import eval_transform
from mean_geo.errors import MeanGeoError
from mean_geo.index import build_index
from mean_geo.inference.loading import load_model
from mean_geo.inference.localization import localize
from mean_geo.retrieval.index_store import read_index
from mean_geo.training.index_pipeline import PartWriter
from tests.helpers.cli import exit_code


def trainer():
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[PartWriter()],
    )


@pytest.fixture(scope="module")
def smoke(learned_run, data_dir):
    out, metrics, cfg = learned_run
    best = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    world = Path(cfg.dataset.root)
    return Path(best), world, metrics


@pytest.fixture(scope="module")
def index(smoke, tmp_path_factory):
    best, world, _ = smoke
    gallery = world / "Testing" / "150" / "query_satellite"  # the held-out places
    coords = tmp_path_factory.mktemp("coords") / "coords.csv"
    rows = [
        f"{p.relative_to(gallery)},{40 + i / 100:.4f},{-3 - i / 100:.4f}"
        for i, p in enumerate(sorted(gallery.rglob("*.png")))
    ]
    coords.write_text("path,lat,lon\n" + "\n".join(rows) + "\n")
    out = tmp_path_factory.mktemp("index") / "gallery.safetensors"
    assert (
        build_index(gallery, best, out, trainer(), batch_size=4, num_workers=0, part_size=3, coords_csv=coords) == out
    )
    return out, gallery, coords


def model_dim(ckpt) -> int:
    return load_model(ckpt).model.embedding_dim


def test_index_holds_every_tile_with_ids_and_coordinates(index, smoke):
    out, gallery, coords = index
    idx = read_index(out)
    tiles = sorted(gallery.rglob("*.png"))
    assert idx.embeddings.shape == (len(tiles), model_dim(smoke[0]))
    assert torch.allclose(idx.embeddings.norm(dim=1), torch.ones(len(tiles)), atol=1e-5)
    assert [t["id"] for t in idx.tiles] == [p.parent.name for p in tiles]
    assert idx.tiles[2]["latlon"] == [40.02, -3.02]  # coordinates round-trip from the CSV
    assert not Path(f"{out}.parts").exists()
    model = load_model(smoke[0])
    x = torch.stack([eval_transform(model.image_size, model.mean, model.std)(load_rgb(tiles[4]))])
    assert model.mean == [0.5, 0.5, 0.5]  # test_convnext's own statistics (timm), not ImageNet
    assert torch.allclose(model.model(x)[0], idx.embeddings[4], atol=1e-5)


def test_localize_finds_held_out_places_and_agrees_with_the_evaluator(index, smoke):
    out, gallery, _ = index
    best, world, metrics = smoke
    photos = sorted((world / "Testing").glob("*/query_drone/*/*.jpg"))  # every altitude
    results = localize(photos, read_index(out), best, k=5)
    assert all(len(r) == 5 and r[0].score >= r[-1].score for r in results)
    hits = [r[0].id == p.parent.name for p, r in zip(photos, results, strict=True)]
    # the right place first for most held-out photos (8 places: chance 12.5 %)
    assert sum(hits) / len(hits) > 0.5
    assert results[0][0].lat is not None
    pytest.importorskip("faiss")
    with_faiss = localize(photos, read_index(out), best, k=5, backend="faiss")
    assert [[m.id for m in r] for r in with_faiss] == [[m.id for m in r] for r in results]


def test_a_flip_tta_index_embeds_tiles_and_photos_with_their_mirror_images(smoke, tmp_path):
    """``flip_tta=true``: each tile is of it and its mirror (checked against a hand-made sum), the
    index records it, and localize's photo embeddings follow it."""
    best, world, _ = smoke
    gallery = world / "Testing" / "150" / "query_satellite"
    out = build_index(
        gallery, best, tmp_path / "flip.safetensors", trainer(), batch_size=4, num_workers=0, flip_tta=True
    )
    idx = read_index(out)
    assert (
        idx.flip_tta
        and not read_index(build_index(gallery, best, tmp_path / "plain", trainer(), num_workers=0)).flip_tta
    )
    model = load_model(best)
    tile = sorted(gallery.rglob("*.png"))[3]
    x = torch.stack([eval_transform(model.image_size, model.mean, model.std)(load_rgb(tile))])
    with torch.no_grad():
        summed = model.model.features(x)[2] + model.model.features(x.flip(-1))[2]
    assert torch.allclose(torch.nn.functional.normalize(summed, dim=-1)[0], idx.embeddings[3], atol=1e-5)
    assert not torch.allclose(model.model(x)[0], idx.embeddings[3], atol=1e-3)  # the flip changed it
    # a gallery tile given as a photo finds itself with its flip-TTA embedding: score 1
    (match,) = localize([tile], idx, model, k=1)
    assert match[0].path == str(tile) and match[0].score == pytest.approx(1.0, abs=1e-5)


def test_interrupted_indexing_resumes_to_the_same_index(smoke, index, tmp_path, monkeypatch):
    best, _, _ = smoke
    _, gallery, _ = index
    t = trainer()
    real_predict, calls = t.predict, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(t, "predict", flaky)
    out = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        build_index(gallery, best, out, t, batch_size=4, num_workers=0, part_size=3)
    assert not out.exists() and len(list(Path(f"{out}.parts").glob("part_*"))) == 2
    monkeypatch.undo()
    build_index(gallery, best, out, trainer(), batch_size=4, num_workers=0, part_size=3)
    assert torch.allclose(read_index(out).embeddings, read_index(index[0]).embeddings, atol=1e-6)
    with pytest.raises(MeanGeoError, match="never overwritten"):
        build_index(gallery, best, out, trainer())


def test_export_reloads_to_identical_embeddings_and_onnx_matches(smoke, tmp_path):
    from mean_geo.export import main
    from mean_geo.inference.export import export_onnx

    best, world, _ = smoke
    assert main([f"ckpt={best}", f"out={tmp_path / 'export'}"]) == 0
    folder = tmp_path / "export"
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    a, b = load_model(best), load_model(folder)
    assert a.fingerprint == b.fingerprint
    x = torch.randn(3, 3, a.image_size, a.image_size)
    with torch.inference_mode():
        assert torch.equal(a.model(x), b.model(x))
    card = (folder / "README.md").read_text()
    assert "test_resnet" in card and "test/d2s/R@1" in card
    assert exit_code(main, [f"ckpt={best}", f"out={folder}"]) == 2  # never into a non-empty folder
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    assert export_onnx(folder).is_file()  # raises if ONNX and PyTorch outputs differ


def test_cli_json_and_clear_errors(index, smoke, tmp_path, capsys):
    out, gallery, _ = index
    best, world, _ = smoke
    photo = next((world / "Testing" / "200" / "query_drone").rglob("*.jpg"))
    args = [str(photo), f"index={out}", f"ckpt={best}", "k=3", f"out={tmp_path / 'strips'}", "--json"]
    assert exit_code(loc.main, args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload[0]["matches"]) == 3 and len(list((tmp_path / "strips").glob("*.png"))) == 1
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    other = torch.load(best, map_location="cpu", weights_only=False)
    other["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in other["state_dict"].items()}
    torch.save(other, tmp_path / "other.ckpt")
    for args, message in [
        ([str(bad), f"index={out}", f"ckpt={best}"], "bad.jpg: not a .jpg image"),
        ([str(photo), f"index={tmp_path / 'none'}", f"ckpt={best}"], "no such index file"),
        ([str(photo), f"index={out}", f"ckpt={tmp_path / 'other.ckpt'}"], "did not build the index"),
    ]:
        assert exit_code(loc.main, args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_world_coordinates_locate_the_index_and_measure_localize_in_metres(smoke, tmp_path, capsys):
    """The synthetic world's place,lat,lon file is what `index coords_csv=` and `localize
    --coords-csv` read: tiles get their place's centre; each match is so many metres off."""
    best, world, _ = smoke
    places = world / "coordinates.csv"
    gallery = world / "Testing" / "150" / "gallery_satellite"
    out = tmp_path / "tiles.index"
    build_index(gallery, best, out, trainer(), batch_size=4, num_workers=0, coords_csv=places)
    _, table = read_coordinates_csv(places)
    tiles = read_index(out).tiles
    assert all(tuple(t["latlon"]) == table[t["id"]] for t in tiles)
    photo = next((world / "Testing" / "150" / "query_drone").rglob("*.jpg"))
    args = [str(photo), "--index", str(out), "--ckpt", str(best), "--k", str(len(tiles))]
    assert exit_code(loc.main, [*args, "--coords-csv", str(places), "--out", str(tmp_path / "s"), "--json"]) == 0
    matches = json.loads(capsys.readouterr().out)[0]["matches"]
    offs = {m["id"]: m["distance_m"] for m in matches}
    assert offs[photo.parent.name] == pytest.approx(0.0, abs=1e-6)
    assert all(d > 700 for place, d in offs.items() if place != photo.parent.name)
