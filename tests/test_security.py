"""Loading a checkpoint, an export or an index never runs code (crafted files as an attacker writes them).

Every crafted file is given to every entry point that loads a model; each must refuse it with one
line, and a sentinel file that the payload would create must not exist afterwards.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mean_geo import eval as eval_entry
from mean_geo import export as export_entry
from mean_geo import localize as localize_entry
from mean_geo import train as train_entry
from mean_geo.errors import MeanGeoError
from mean_geo.index import build_index
from mean_geo.inference.loading import load_model
from mean_geo.retrieval.index_store import read_index
from mean_geo.training.index_pipeline import PartWriter
from mean_geo.training.lit_module import MEANLitModule
from tests.helpers.cli import exit_code, run_hydra_entry
from tests.helpers.config import compose_config, quiet_overrides
from tests.helpers.numerics import assert_same_tensors, assert_within_float32_rounding

LEGACY = Path(__file__).parent / "fixtures" / "legacy_v1"


class _RunsCode:
    """Unpickling this runs a shell command (what a malicious pickle does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def evil_pickle(sentinel: Path) -> bytes:
    return pickle.dumps(_RunsCode(f"touch {sentinel}"))


# --- crafted specs: each edits a legacy-format spec {model, loss, dataset} in place ----------
def _open_file(r, s):
    r["model"]["backbone"] = {"_target_": "builtins.open", "_args_": [str(s), "w"]}


def _torch_load_pickle(r, s):
    r["model"] = {
        "_target_": "torch.load",
        "f": {"_target_": "io.BytesIO", "_args_": [evil_pickle(s).decode("latin-1")]},
        "weights_only": False,
    }


def _subprocess_run(r, s):
    r["loss"]["infonce"] = {"_target_": "subprocess.run", "args": ["touch", str(s)]}


def _os_system(r, s):
    r["dataset"] = {"_target_": "os.system", "_args_": [f"touch {s}"]}


def _import_module(r, s):
    r["model"]["weights_file"] = {"_target_": "importlib.import_module", "name": "antigravity"}


def _unknown_architecture(r, s):
    r["model"].pop("_target_")
    r["model"]["architecture"] = "evil"


def _unexpected_key(r, s):
    r["model"]["run_this"] = f"touch {s}"


def _wrong_type(r, s):
    r["model"]["num_local"] = "2"


def _whole_spec_is_code(r, s):
    r.clear()
    r.update({"_target_": "os.system", "_args_": [f"touch {s}"]})


RECIPE_CASES = {
    "builtins.open": _open_file,
    "torch.load(weights_only=False)": _torch_load_pickle,
    "subprocess.run": _subprocess_run,
    "os.system": _os_system,
    "importlib.import_module": _import_module,
    "unknown architecture": _unknown_architecture,
    "unexpected key": _unexpected_key,
    "wrong type": _wrong_type,
    "spec is a target": _whole_spec_is_code,
}
# an export's config.json holds only the model spec
EXPORT_CASES = {k: v for k, v in RECIPE_CASES.items() if k not in ("subprocess.run", "os.system")}


@pytest.fixture(scope="module")
def legacy_ckpt():
    return torch.load(LEGACY / "last.ckpt", map_location="cpu", weights_only=True)


def crafted_checkpoint(legacy_ckpt, tmp: Path, case: str, sentinel: Path) -> Path:
    ckpt = copy.deepcopy(legacy_ckpt)
    RECIPE_CASES[case](ckpt["hyper_parameters"]["build_config"], sentinel)
    path = tmp / "crafted.ckpt"
    torch.save(ckpt, path)
    return path


def crafted_export(tmp: Path, case: str, sentinel: Path) -> Path:
    folder = tmp / "crafted_export"
    shutil.copytree(LEGACY / "export", folder)
    config = json.loads((folder / "config.json").read_text())
    spec = {"model": config["model"], "loss": {}, "dataset": {}}
    EXPORT_CASES[case](spec, sentinel)
    config["model"] = spec.get("model", spec)  # "spec is a target" leaves no "model" key
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def pickle_bomb(tmp: Path, sentinel: Path) -> Path:
    path = tmp / "bomb.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"build_config": _RunsCode(f"touch {sentinel}")}}, path)
    return path


# --- every entry point that loads a model, called in-process; each returns the error line -----
def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (90, 120, 60)).save(path)
    return path


def via_load_model(path: Path, tmp: Path, capsys, data_dir) -> str:
    with pytest.raises(MeanGeoError) as exc:
        load_model(path)
    return str(exc.value)


def via_export(path: Path, tmp: Path, capsys, data_dir) -> str:
    assert exit_code(export_entry.main, [f"ckpt={path}", f"out={tmp / 'exported'}"]) == 2
    assert not (tmp / "exported").exists()
    return capsys.readouterr().err


def via_index(path: Path, tmp: Path, capsys, data_dir) -> str:
    gallery = tmp / "gallery"
    _png(gallery / "a.png"), _png(gallery / "b.png")
    trainer = L.Trainer(accelerator="cpu", callbacks=[PartWriter()], logger=False, enable_progress_bar=False)
    with pytest.raises(MeanGeoError) as exc:
        build_index(gallery, path, tmp / "tiles.index", trainer, num_workers=0)
    assert not (tmp / "tiles.index").exists() and not (tmp / "tiles.index.parts").exists()
    return str(exc.value)


def via_localize(path: Path, tmp: Path, capsys, data_dir) -> str:
    photo = _png(tmp / "photo.png")
    args = [str(photo), f"index={LEGACY / 'gallery.index'}", f"ckpt={path}", f"out={tmp / 'strips'}"]
    assert exit_code(localize_entry.main, args) == 2
    assert not (tmp / "strips").exists()
    return capsys.readouterr().err


def via_eval(path: Path, tmp: Path, capsys, data_dir) -> str:
    cfg = compose_config("eval", [f"ckpt={path}", *quiet_overrides(tmp, data_dir)])
    with pytest.raises(MeanGeoError) as exc:
        eval_entry.run(cfg)
    return str(exc.value)


def via_train_resume(path: Path, tmp: Path, capsys, data_dir) -> str:
    cfg = compose_config("train", ["experiment=smoke", f"resume={path}", *quiet_overrides(tmp, data_dir)])
    with pytest.raises(MeanGeoError) as exc:
        train_entry.run(cfg)
    assert not (tmp / "out" / "checkpoints").exists()
    return str(exc.value)


def via_load_from_checkpoint(path: Path, tmp: Path, capsys, data_dir) -> str:
    with pytest.raises(MeanGeoError) as exc:
        MEANLitModule.load_from_checkpoint(path, weights_only=True)
    return str(exc.value)


CHECKPOINT_READERS = {
    "load_model": via_load_model,
    "export": via_export,
    "index": via_index,
    "localize": via_localize,
    "eval": via_eval,
    "train resume": via_train_resume,
}
EXPORT_READERS = {k: CHECKPOINT_READERS[k] for k in ("load_model", "export", "index", "localize")}


def assert_one_line(message: str, expected: str) -> None:
    message = message.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert expected in message, message


@pytest.mark.parametrize("reader", CHECKPOINT_READERS)
@pytest.mark.parametrize("case", RECIPE_CASES)
def test_crafted_checkpoint_is_refused_by_every_entry_point(case, reader, legacy_ckpt, tmp_path, capsys, data_dir):
    sentinel = tmp_path / "SENTINEL"
    path = crafted_checkpoint(legacy_ckpt, tmp_path, case, sentinel)
    message = CHECKPOINT_READERS[reader](path, tmp_path, capsys, data_dir)
    assert_one_line(message, str(path))
    assert not sentinel.exists()


@pytest.mark.parametrize("reader", EXPORT_READERS)
@pytest.mark.parametrize("case", EXPORT_CASES)
def test_crafted_export_is_refused_by_every_entry_point(case, reader, tmp_path, capsys, data_dir):
    sentinel = tmp_path / "SENTINEL"
    folder = crafted_export(tmp_path, case, sentinel)
    message = EXPORT_READERS[reader](folder, tmp_path, capsys, data_dir)
    assert_one_line(message, "config.json")
    assert not sentinel.exists()


@pytest.mark.parametrize("reader", [*CHECKPOINT_READERS, "load_from_checkpoint"])
def test_malicious_pickle_is_refused_without_unpickling(reader, tmp_path, capsys, data_dir):
    sentinel = tmp_path / "SENTINEL"
    path = pickle_bomb(tmp_path, sentinel)
    fn = via_load_from_checkpoint if reader == "load_from_checkpoint" else CHECKPOINT_READERS[reader]
    message = fn(path, tmp_path, capsys, data_dir)
    assert_one_line(message, "not a readable checkpoint")
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "content", [b"", os.urandom(4096), (LEGACY / "last.ckpt").read_bytes()[:100_000]], ids=["empty", "random", "cut"]
)
@pytest.mark.parametrize("reader", ["load_model", "eval", "train resume"])
def test_broken_files_are_refused_with_one_line(content, reader, tmp_path, capsys, data_dir):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    message = CHECKPOINT_READERS[reader](path, tmp_path, capsys, data_dir)
    assert_one_line(message, f"{path}: not a readable checkpoint")


def test_crafted_index_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    index = load_file(str(LEGACY / "gallery.index"))
    bad_tiles = json.dumps([{"path": "a", "id": "1", "latlon": {"_target_": "os.system"}}] * 6)
    for meta, expected in (
        ({"tiles": bad_tiles}, "tile 0"),
        ({"tiles": "[{"}, "not JSON"),
        ({"fingerprint": "x" * 10_000}, "fingerprint"),
        ({"image_size": "1e9"}, "image_size"),
    ):
        base = {"format": "mean_geo-index/1", "fingerprint": "a91a5bd9035ba38c", "image_size": "64", "tiles": "[]"}
        base["tiles"] = json.dumps([{"path": "a", "id": str(i), "latlon": None} for i in range(6)])
        path = tmp_path / "crafted.index"
        save_file(index, str(path), metadata={**base, **meta})
        with pytest.raises(MeanGeoError) as exc:
            read_index(path)
        assert_one_line(str(exc.value), expected)


# --- what must keep working ------------------------------------------------------------------------
# fingerprint, tiles in the index: per fixture generation (each folder's README says how it was made)
FIXTURES = {"legacy_v1": ("a91a5bd9035ba38c", 6), "legacy_v2": ("4f6e921913afe584", 7)}


@pytest.mark.parametrize("generation", sorted(FIXTURES))
@pytest.mark.parametrize("source", ["export", "last.ckpt"])
def test_files_written_by_earlier_versions_still_load_to_the_same_embeddings(generation, source):
    folder = LEGACY.parent / generation
    fingerprint, tiles = FIXTURES[generation]
    expected = load_file(str(folder / "expected_embeddings.safetensors"))
    loaded = load_model(folder / source)
    assert loaded.image_size == 64 and loaded.fingerprint == fingerprint
    assert loaded.spec["model"]["architecture"] == "mean"
    # the same model: every tensor is the stored bytes; its embeddings are float32 arithmetic,
    # computed on the machine that wrote the fixture, so equal within this machine's float32 rounding
    if source == "export":
        assert_same_tensors(loaded.model, load_file(str(folder / "export" / "model.safetensors")))
    else:
        stored = torch.load(folder / source, map_location="cpu", weights_only=True)["state_dict"]
        assert_same_tensors(loaded.model, stored, prefix="model.")
    assert_within_float32_rounding(loaded.model, expected["images"], expected["embeddings"])
    index = read_index(folder / "gallery.index")
    assert index.fingerprint == loaded.fingerprint and len(index.tiles) == tiles


def test_loading_a_model_needs_neither_lightning_nor_hydra():
    code = (
        "import sys, mean_geo.inference.loading as h\n"
        f"h.load_model({str(LEGACY / 'export')!r}); h.load_model({str(LEGACY / 'last.ckpt')!r})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'hydra')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_new_checkpoints_and_exports_hold_names_not_code(smoke_run, tmp_path):
    out, _, _ = smoke_run
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    spec = ckpt["hyper_parameters"]["spec"]
    assert "_target_" not in json.dumps(spec)
    assert spec["model"]["architecture"] == "mean" and spec["dataset"]["name"] == "sues200"
    assert exit_code(export_entry.main, [f"ckpt={out / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / 'e'}"]) == 0
    config = (tmp_path / "e" / "config.json").read_text()
    assert "_target_" not in config and json.loads(config)["model"]["architecture"] == "mean"
    lit = MEANLitModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.equal(lit.model.backbone.net.stem[0].weight, ckpt["state_dict"]["model.backbone.net.stem.0.weight"])


@pytest.mark.parametrize("entry", ["eval", "localize", "train"])
def test_command_line_prints_one_error_line_and_exits_2(entry, legacy_ckpt, tmp_path, data_dir, monkeypatch, capsys):
    sentinel = tmp_path / "SENTINEL"
    path = crafted_checkpoint(legacy_ckpt, tmp_path, "torch.load(weights_only=False)", sentinel)
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    if entry == "localize":  # a plain argv entry point: its return code is the exit code
        photo = str(_png(tmp_path / "p.png"))
        assert exit_code(localize_entry.main, [photo, f"index={LEGACY / 'gallery.index'}", f"ckpt={path}"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    else:
        main, args = {
            "eval": (eval_entry.main, [f"ckpt={path}"]),
            "train": (train_entry.main, ["experiment=smoke", f"resume={path}"]),
        }[entry]
        line = run_hydra_entry(main, args, tmp_path, monkeypatch, capsys)
    assert "model._target_='torch.load'" in line
    assert not sentinel.exists()


@pytest.mark.parametrize("tag", ["mean_geo/9", None, {"_target_": "os.system"}])
def test_an_export_of_a_format_this_version_does_not_read_is_one_line(tag, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(LEGACY.parent / "legacy_v2" / "export", folder)
    config = json.loads((folder / "config.json").read_text())
    config["format"] = tag
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MeanGeoError) as exc:
        load_model(folder)
    assert_one_line(str(exc.value), f"{folder / 'config.json'}: export format")
    assert "mean_geo/1, mean_geo/2" in str(exc.value)


def test_exports_are_written_in_the_format_the_reader_checks(tmp_path):
    from mean_geo.inference.export_format import EXPORT_FORMAT, READABLE_FORMATS

    exported = load_model(LEGACY.parent / "legacy_v2" / "export")
    exported.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["format"] == EXPORT_FORMAT
    assert EXPORT_FORMAT in READABLE_FORMATS and load_model(tmp_path / "again").fingerprint == exported.fingerprint
