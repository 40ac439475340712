"""Bad input gets one `error:` line and exit code 2, and nothing on disk is changed or half-written.

The Hydra entry points run in-process with a patched ``sys.argv`` (what the command line does,
without paying a new interpreter per case).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mean_geo import eval as eval_entry
from mean_geo import export as export_entry
from mean_geo import index as index_entry
from mean_geo import localize as localize_entry
from mean_geo import train as train_entry
from mean_geo.cli import one_line
from mean_geo.data.datasets import load_rgb
from mean_geo.datamodules import University1652DataModule
from mean_geo.errors import DatasetLayoutError
from tests.helpers.cli import exit_code, run_hydra_entry
from tests.helpers.paths import FIXTURES

LEGACY = FIXTURES / "legacy_v1"


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("dataset.batch_size=abc", "dataset.batch_size='abc': expected a whole number >= 2"),
        ("dataset.image_size=0", "dataset.image_size=0: expected a whole number in 8..4096"),
        ("dataset.num_workers=-1", "dataset.num_workers=-1: expected a whole number >= 0"),
        ("dataset.eval_batch_size=0", "dataset.eval_batch_size=0"),
        # the evaluation options are checked before the world is made or a step is trained
        ("eval.corruptions=[fog,hail]", "eval.corruptions: unknown ['hail']"),
        (
            "eval.severities=[0,3]",
            "eval.severities=[0, 3]: expected a whole number in 1..5 or a non-empty list",
        ),
        ("eval.rerank=yes", "eval.rerank='yes': expected true or false"),
        ("eval.rerank_k1=0", "eval.rerank_k1=0: expected a whole number >= 1"),
        ("eval.multi_query=median", "eval.multi_query='median'"),
    ],
)
def test_bad_numbers_and_options_are_named(override, expected, tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    line = run_hydra_entry(train_entry.main, ["experiment=smoke", override], tmp_path, monkeypatch, capsys)
    assert expected in line


def test_a_weights_file_that_is_not_weights_is_named(tmp_path, monkeypatch, capsys, data_dir):
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    args = ["experiment=smoke", f"model.weights_file={garbage}"]
    line = run_hydra_entry(train_entry.main, args, tmp_path, monkeypatch, capsys)
    assert f"model.weights_file={garbage}: not loadable as test_convnext weights" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_hardware_gpu_without_a_gpu(tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    line = run_hydra_entry(train_entry.main, ["experiment=smoke", "hardware=gpu"], tmp_path, monkeypatch, capsys)
    assert "trainer.accelerator=gpu: no CUDA GPU is visible here" in line


@pytest.mark.parametrize("hardware", ["cpu", "auto", "ddp_cpu"])
def test_gpu_decoding_where_training_runs_on_the_cpu_is_refused_before_any_work(
    hardware, tmp_path, monkeypatch, capsys
):
    """decode_on=gpu on a CPU run silently decoded inside the training process; now it is said, as
    hardware=gpu without a GPU is, before a world is written (no data folder is made)."""
    monkeypatch.setenv("MEAN_GEO_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["experiment=smoke", f"hardware={hardware}", "dataset.decode_on=gpu"]
    line = run_hydra_entry(train_entry.main, args, tmp_path, monkeypatch, capsys)
    assert "dataset.decode_on=gpu: training runs on the CPU here" in line and "dataset.decode_on=cpu" in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["method=camp", "dataset.image_size=48"], "dataset.image_size=48: CAMP's 3 part blocks need"),
        (["method=camp", "model.part_blocks=5"], "dataset.image_size=64: CAMP's 5 part blocks need"),
        (["dataset.image_size=24"], "dataset.image_size=24: test_convnext reduces its input 32x"),
        (["method=dac", "dataset.image_size=16"], "dataset.image_size=16: test_convnext reduces its input 32x"),
    ],
)
def test_an_input_size_the_model_cannot_run_at_is_refused_before_any_work(args, says, tmp_path, monkeypatch, capsys):
    """CAMP's part blocks at a small dataset.image_size raised a ValueError in the first forward pass;
    each architecture says what it needs, checked before a world is written."""
    monkeypatch.setenv("MEAN_GEO_DATA", str(tmp_path / "data"))
    line = run_hydra_entry(train_entry.main, ["experiment=smoke", *args], tmp_path, monkeypatch, capsys)
    smallest = {"48": "64", "64": "96", "24": "32", "16": "32"}[says.split("=")[1].split(":")[0]]
    assert says in line and f"use dataset.image_size={smallest} or more" in line
    assert not (tmp_path / "data").exists()


def test_eval_checks_an_image_size_override_against_the_checkpoints_model(smoke_run, tmp_path, monkeypatch, capsys):
    out, _, _ = smoke_run
    best = json.loads((out / "metrics.json").read_text())["best_checkpoint"]
    line = run_hydra_entry(eval_entry.main, [f"ckpt={best}", "dataset.image_size=20"], tmp_path, monkeypatch, capsys)
    assert "dataset.image_size=20: test_convnext reduces its input 32x" in line


@pytest.mark.parametrize("dataset", ["sues200", "university1652"])
def test_a_root_that_is_a_file_is_called_a_file(dataset, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "dataset.zip"
    a_file.write_bytes(b"PK")
    args = [f"dataset={dataset}", f"dataset.root={a_file}", "model.pretrained=false"]
    line = run_hydra_entry(train_entry.main, args, tmp_path, monkeypatch, capsys)
    assert f"{a_file}: is a file" in line and a_file.read_bytes() == b"PK"


@pytest.mark.parametrize(
    "main, args, key",
    [
        (eval_entry.main, [], "ckpt"),
        (index_entry.main, ["ckpt=x", "out=y"], "gallery_dir"),
    ],
)
def test_a_missing_mandatory_argument_is_named(main, args, key, tmp_path, monkeypatch, capsys):
    line = run_hydra_entry(main, args, tmp_path, monkeypatch, capsys)
    assert line == f"error: {key} is required; pass {key}=... on the command line"


@pytest.mark.parametrize("arg", ["part_size=0", "batch_size=0", "num_workers=-1"])
def test_index_checks_its_numbers_before_writing_anything(arg, tmp_path, monkeypatch, capsys):
    gallery = tmp_path / "tiles"
    gallery.mkdir()
    Image.new("RGB", (32, 32)).save(gallery / "a.png")
    before = snapshot(tmp_path)
    args = [f"gallery_dir={gallery}", f"ckpt={LEGACY / 'export'}", f"out={tmp_path / 'x.index'}", arg]
    line = run_hydra_entry(index_entry.main, args, tmp_path, monkeypatch, capsys)
    assert arg.split("=")[0] in line
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("run")}
    assert after == before  # no manifest, no parts: the corrected rerun starts clean


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["k=0"], "argument --k: '0' is not a whole number >= 1"),
        (["--k", "abc"], "argument --k: 'abc' is not a whole number >= 1"),
        (["backend=annoy"], "argument --backend: invalid choice: 'annoy'"),
        (["out=FILE"], "is a file, not a folder"),
    ],
)
def test_localize_checks_its_arguments_before_the_work(extra, expected, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    a_file = tmp_path / "taken.txt"
    a_file.write_text("mine")
    extra = [e.replace("FILE", str(a_file)) for e in extra]
    args = [str(photo), f"index={LEGACY / 'gallery.index'}", f"ckpt={LEGACY / 'export'}", *extra]
    assert exit_code(localize_entry.main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("arg", ["onxx=true", "exports/new", "onnx=maybe"])
def test_export_refuses_unknown_or_misspelled_arguments(arg, tmp_path, capsys):
    args = [f"ckpt={LEGACY / 'last.ckpt'}", f"out={tmp_path / 'e'}", arg]
    assert exit_code(export_entry.main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and arg.split("=")[0] in err and "\n" not in err
    assert not (tmp_path / "e").exists()


def test_export_names_its_own_argument(tmp_path, capsys):
    assert exit_code(export_entry.main, [f"ckpt={tmp_path / 'none.ckpt'}", f"out={tmp_path / 'e'}"]) == 2
    assert f"ckpt={tmp_path / 'none.ckpt'}: no such checkpoint file" in capsys.readouterr().err


def test_a_place_folder_named_with_a_non_ascii_digit_is_an_id_like_any_other(u1652_world, tmp_path):
    import shutil

    root = tmp_path / "u1652"
    shutil.copytree(u1652_world, root)
    first = sorted((root / "test" / "gallery_satellite").iterdir())[0]
    first.rename(first.parent / "²")  # "²".isdigit() is True, int("²") fails
    dm = University1652DataModule(root, image_size=32, num_workers=0, directions=["d2s"])
    dm.setup("test")
    ids = dm.eval_datasets[1].location_ids.tolist()
    assert len(set(ids)) == len(ids) == len({r.location for r in dm.eval_datasets[1].records})


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    values = np.array([[0, 256 * 64], [256 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)  # 16-bit greyscale PNG ("I;16")
    rgb = np.asarray(load_rgb(path))
    assert rgb[:, :, 0].tolist() == [[0, 64], [128, 255]] and (rgb[..., 0] == rgb[..., 2]).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert load_rgb(path).size == (20, 40)


def test_an_image_over_the_decompression_bomb_limit_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this
    with pytest.raises(DatasetLayoutError) as exc:
        load_rgb(path)
    assert str(exc.value).startswith(f"{path}: too large to decode safely") and "\n" not in str(exc.value)


def test_an_error_from_a_dataloader_worker_is_reported_as_its_own_line():
    """num_workers > 0: torch re-raises the worker's error with its whole traceback as message."""
    from torch._utils import ExceptionWrapper

    try:
        raise DatasetLayoutError("/data/x/0001/1.jpg: cannot be decoded as an image (truncated)")
    except DatasetLayoutError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DatasetLayoutError) as exc:
        wrapped.reraise()
    assert "Traceback" in str(exc.value)  # what users saw before
    assert one_line(exc.value) == "/data/x/0001/1.jpg: cannot be decoded as an image (truncated)"


def test_a_corrupt_image_loaded_by_workers_ends_in_one_line(tmp_path, monkeypatch, capsys, sues_world):
    import shutil

    root = tmp_path / "world"
    shutil.copytree(sues_world, root)
    victim = sorted((root / "Testing" / "150" / "query_drone").rglob("*.jpg"))[0]
    victim.write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)  # a JPEG header, then nothing decodable
    monkeypatch.setenv("MEAN_GEO_DATA", str(tmp_path / "data"))
    args = [
        "experiment=smoke",
        "dataset=sues200",
        f"dataset.root={root}",
        "dataset.num_workers=1",
        "dataset.image_size=64",
        "dataset.batch_size=4",
        "model.pretrained=false",
        "model.backbone=test_convnext",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    line = run_hydra_entry(train_entry.main, args, tmp_path, monkeypatch, capsys)
    assert line == f"error: {victim}: cannot be decoded as an image" or line.startswith(f"error: {victim}: ")


def _mismatched_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint whose spec says one CEA width and whose weights have another."""
    ckpt = torch.load(LEGACY / "last.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["build_config"]["model"]["cea_out_dim"] = (
        32  # the weights hold 16 (a legacy file: build_config)
    )
    path = tmp_path / "mismatch.ckpt"
    torch.save(ckpt, path)
    return path


def test_eval_of_weights_that_do_not_fit_their_spec_is_one_line(tmp_path, monkeypatch, capsys, sues_world):
    path = _mismatched_checkpoint(tmp_path)
    args = [f"ckpt={path}", f"dataset.root={sues_world}"]
    line = run_hydra_entry(eval_entry.main, args, tmp_path, monkeypatch, capsys)
    assert f"ckpt={path}: weights do not fit the model" in line and "of another shape" in line


def test_resume_from_another_experiments_checkpoint_is_one_line(tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    other = LEGACY / "last.ckpt"  # 4 training places, CEA 16/16: not this smoke model
    line = run_hydra_entry(train_entry.main, ["experiment=smoke", f"resume={other}"], tmp_path, monkeypatch, capsys)
    assert f"resume={other}: weights do not fit the model" in line and "another experiment" in line
    assert not list((tmp_path / "run").rglob("*.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["university1652", "sues200"])
def test_smoke_model_trains_and_evaluates_on_the_real_layouts(dataset, tmp_path, u1652_world, sues_world):
    """University-1652 as unpacked and SUES-200 as split by the official script, read as the real
    datasets (dataset=..., not the synthetic dataset); SUES-200 as downloaded: test_sues200_raw."""
    from tests.helpers.config import compose_config, quiet_overrides

    root = u1652_world if dataset == "university1652" else sues_world
    overrides = ["experiment=smoke", f"dataset={dataset}", f"dataset.root={root}", "eval.plots=false"]
    if dataset == "sues200":
        overrides.append("dataset.altitude=all")
    cfg = compose_config("train", [*overrides, *quiet_overrides(tmp_path, tmp_path / "data")])
    metrics = train_entry.run(cfg)
    assert 0 <= metrics["test/d2s/R@1"] <= 100 and 0 <= metrics["test/s2d/AP"] <= 100
    assert not (tmp_path / "data").exists()  # a real dataset: nothing generated anywhere


def blocked_paths(tmp_path: Path) -> dict[str, Path]:
    """Where no writer can write: under a file, and a file where a folder must be."""
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("mine")
    return {"under a file": a_file / "sub" / "out", "a file": a_file}


@pytest.mark.parametrize("blocked", ["under a file", "a file"])
@pytest.mark.parametrize("writer", ["report", "localize", "index", "export", "bench", "cache"])
def test_every_writer_checks_its_output_path_through_one_place(writer, blocked, tmp_path, capsys, monkeypatch):
    """report --out, localize --out, index out, export out, bench --out and dataset.cache_dir: a path
    under a file, or a file where a folder goes, is one line naming the option; the file is kept."""
    from mean_geo import bench as bench_entry
    from mean_geo import report as report_entry
    from mean_geo.data.decoded_cache import check_cache_dir
    from mean_geo.errors import ConfigError

    target = blocked_paths(tmp_path)[blocked]
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    model = [f"index={LEGACY / 'gallery.index'}", f"ckpt={LEGACY / 'export'}"]
    commands = {
        "report": (report_entry.main, [str(LEGACY), "--out", f"{target}/r.md"]),
        "localize": (localize_entry.main, [str(photo), *model, f"out={target}"]),
        "export": (export_entry.main, [f"ckpt={LEGACY / 'last.ckpt'}", f"out={target}/e"]),
        "bench": (bench_entry.main, ["--quick", "--only", "nothing", "--out", f"{target}/r.json"]),
    }
    if writer == "cache":
        with pytest.raises(ConfigError) as exc:
            check_cache_dir(target, tmp_path / "dataset")
        err = f"error: {exc.value}"
    elif writer == "index":
        args = [f"gallery_dir={tmp_path}", f"ckpt={LEGACY / 'export'}", f"out={target}/x.index"]
        err = run_hydra_entry(index_entry.main, args, tmp_path, monkeypatch, capsys)
    else:
        main, args = commands[writer]
        assert exit_code(main, args) == 2
        err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "cannot write there" in err, err
    assert (tmp_path / "a_file.txt").read_text() == "mine"


def test_a_folder_that_cannot_be_written_is_named_with_the_reason(tmp_path, monkeypatch):
    """Root's runs ignore permission bits, so the probe creates a file; a read-only disk says so."""
    import errno
    import tempfile

    from mean_geo.errors import ConfigError
    from mean_geo.utils import output

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ConfigError, match=r"dataset.cache_dir=.*: cannot write there \(read-only file system\)"):
        output.writable_folder(tmp_path / "cache", "dataset.cache_dir")
