"""Round 3 of bad input: values Hydra passes through untyped, config choices that do not exist,
a run folder that cannot be made, a diverging run, non-finite embeddings, partial coordinates.

Each ends in one ``error:`` line naming the key or file (exit 2), or, where legal, works.  The
typed table (:mod:`mean_geo.cli.settings`) is checked through the real entry points.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from mean_geo import eval as eval_entry
from mean_geo import index as index_entry
from mean_geo import train as train_entry
from mean_geo.cli.hydra_app import checked_values
from mean_geo.cli.settings import RULES, check_settings
from mean_geo.errors import ConfigError, NonFiniteError
from mean_geo.retrieval.conventions import evaluate_conventions
from mean_geo.retrieval.distances import ranked_distance_metrics
from mean_geo.retrieval.evaluate import evaluate
from mean_geo.retrieval.index_store import read_index, write_index
from mean_geo.training.progress import LineProgressBar, progress_bar
from tests.helpers.cli import run_hydra_entry, run_module
from tests.helpers.paths import FIXTURES

LEGACY = FIXTURES / "legacy_v2"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("seed=abc", "seed='abc': expected a whole number in 0..4294967295"),
        ("seed=-3", "seed=-3: expected a whole number"),
        ("eval.ks=abc", "eval.ks='abc': expected a non-empty list"),
        ("eval.ks=[0]", "eval.ks=[0]: expected a non-empty list, each item a whole number >= 1"),
        ("eval.ks=[]", "eval.ks=[]: expected a non-empty list"),
        ("eval.rerank_lambda=2", "eval.rerank_lambda=2: expected a number in [0, 1]"),
        ("optim.optimizer.lr=-1", "optim.optimizer.lr=-1: expected a number > 0"),
        ("optim.optimizer.lr=0", "optim.optimizer.lr=0: expected a number > 0"),
        ("optim.optimizer.lr=abc", "optim.optimizer.lr='abc': expected a number > 0"),
        ("optim.optimizer.weight_decay=-0.1", "optim.optimizer.weight_decay=-0.1: expected a number >= 0"),
        ("optim.scheduler.warmup_fraction=1.5", "optim.scheduler.warmup_fraction=1.5"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1 with trainer.max_steps=-1 would train forever"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 trains nothing"),
        ("trainer.max_epochs=-5", "trainer.max_epochs=-5: expected a whole number >= -1"),
        ("trainer.precision=17", "trainer.precision=17: expected one of"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: expected a number >= 0"),
        ("dataset.batch_size=1", "dataset.batch_size=1: expected a whole number >= 2 (2 or more: the BatchNorm"),
        ("dataset.val_locations=1.0", "dataset.val_locations=1.0: expected a number in [0, 1)"),
        ("dataset.directions=[d2s,x2y]", "dataset.directions=['d2s', 'x2y']"),
        ("loss.weight_ce=-1", "loss.weight_ce=-1: expected a number >= 0"),
        ("loss.infonce.temperature=0", "loss.infonce.temperature=0: expected a number > 0"),
        ("loss.infonce.label_smoothing=1", "loss.infonce.label_smoothing=1: expected a number in [0, 1)"),
        ("channels_last=maybe", "channels_last='maybe': expected true or false"),
        ("grad_cache.chunk_size=0", "grad_cache.chunk_size=0: expected a whole number >= 1"),
        ("trainer.accelerator=tpu", "trainer.accelerator='tpu': expected one of auto, cpu, gpu, cuda, mps"),
        ("+trainer.strategy=ddp_typo", "trainer.strategy='ddp_typo': expected one of auto, ddp"),
        ("callbacks.progress_bar.every_s=-1", "callbacks.progress_bar.every_s=-1: expected a number >= 0"),
        ("+dataset.joint_flip_p=2", "dataset.joint_flip_p=2: expected a number in [0, 1]"),
        ("dataset.synthesize.test_locations=-1", "dataset.synthesize.test_locations=-1: expected 1-11"),
        ("eval.corruptions=[fog,1]", "eval.corruptions=['fog', 1]: expected a non-empty string or a list"),
        ("dataset.root=${nowhere}", "dataset.root: Interpolation key 'nowhere' not found"),
    ],
)
def test_untyped_values_are_refused_before_any_work(override, expected, tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.setenv("MEAN_GEO_DATA", str(tmp_path / "no_world_yet"))
    line = run_hydra_entry(train_entry.main, ["experiment=smoke", override], tmp_path, monkeypatch, capsys)
    assert expected in line
    assert not (tmp_path / "no_world_yet").exists()  # refused before a world was generated


@pytest.mark.parametrize(
    "legal",
    [
        {"eval": {"corruptions": "all", "severities": 3}},
        {"eval": {"corruptions": "fog", "severities": [1, 5]}},
        {"trainer": {"devices": "auto", "precision": 16, "deterministic": "warn", "strategy": "ddp_spawn"}},
        {"trainer": {"devices": [0, 1], "limit_train_batches": 0.25, "val_check_interval": 100}},
        {"dataset": {"augment": "geometric", "batch_size": 2, "val_locations": 0.0}},
        {"optim": {"optimizer": {"lr": 1, "betas": [0.9, 0.999]}}},
    ],
)
def test_legal_values_of_every_documented_form_pass(legal):
    check_settings(legal, "train")


def test_an_endless_run_is_legal_when_max_steps_ends_it():
    check_settings({"trainer": {"max_epochs": -1, "max_steps": 3}}, "train")
    with pytest.raises(ConfigError, match="trainer.max_steps=0 trains nothing"):
        check_settings({"trainer": {"max_epochs": 1, "max_steps": 0}}, "train")


def test_every_rule_refuses_a_value_of_the_wrong_kind_and_names_its_key():
    for key, rule in RULES.items():
        config: dict = {}
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = {"not": "a value"}
        task = next(iter(rule.tasks)) if rule.tasks else "train"
        with pytest.raises(ConfigError) as exc:
            check_settings(config, task)
        assert str(exc.value).startswith(f"{key}="), key


@pytest.mark.parametrize(
    "entry, args, expected",
    [
        (eval_entry.main, [f"ckpt={LEGACY / 'last.ckpt'}", "eval.ks=[0]"], "eval.ks=[0]"),
        (eval_entry.main, [f"ckpt={LEGACY / 'last.ckpt'}", "seed=abc"], "seed='abc'"),
        (eval_entry.main, [f"ckpt={LEGACY / 'last.ckpt'}", "dataset.eval_batch_size=0"], "eval_batch_size=0"),
        (index_entry.main, ["gallery_dir=x", "ckpt=y", "out=z", "part_size=0"], "part_size=0"),
        (index_entry.main, ["gallery_dir=x", "ckpt=y", "out=z", "batch_size=abc"], "batch_size='abc'"),
    ],
)
def test_eval_and_index_check_their_values_too(entry, args, expected, tmp_path, monkeypatch, capsys):
    assert expected in run_hydra_entry(entry, args, tmp_path, monkeypatch, capsys)


def _hydra_error(main, argv: list[str], tmp_path, monkeypatch, capsys) -> str:
    """Like run_hydra_entry, with the command line exactly as given (no run folder added)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("MEAN_GEO_LOGS", str(tmp_path / "logs"))
    monkeypatch.setattr(sys, "argv", ["mean_geo", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["dataset=sues2000"],
            "error: dataset=sues2000: no such option (available: denseuav, gta_uav, sues200, synthetic, "
            "synthetic_denseuav, synthetic_gta_uav, university1652)",
        ),
        (["experiment=smoke", "logger=mlflow"], "error: logger=mlflow: no such option (available: csv, csv_wandb,"),
        (
            ["experiment=smok"],
            "error: experiment=smok: no such option (available: demo, demo_convnext, demo_denseuav, "
            "demo_dino, demo_gta_uav, smoke)",
        ),
        (["hardware=tpu"], "error: hardware=tpu: no such option (available: auto, cpu,"),
        (["experiment=smoke", "eval.kss=3"], "error: Could not override 'eval.kss'"),
        (["seed=[1"], "error: the command line:"),
    ],
)
def test_config_choices_and_overrides_hydra_refuses_are_one_line(argv, expected, tmp_path, monkeypatch, capsys):
    line = _hydra_error(train_entry.main, argv, tmp_path, monkeypatch, capsys)
    assert line.startswith(expected) and "search path" not in line.lower()


def test_eval_names_the_missing_choice_too(tmp_path, monkeypatch, capsys):
    line = _hydra_error(eval_entry.main, ["ckpt=x", "dataset=sues2000"], tmp_path, monkeypatch, capsys)
    assert line.startswith("error: dataset=sues2000: no such option")


@pytest.mark.parametrize(
    "main, new",
    [(train_entry.main, "python -m mean_geo.train resume="), (eval_entry.main, "python -m mean_geo.eval ckpt=")],
)
def test_the_old_checkpoint_key_names_the_new_one(main, new, tmp_path, monkeypatch, capsys):
    """``ckpt_path=`` (0.2's name in train and eval) says which key replaced it, in one line."""
    for given in ("ckpt_path=x.ckpt", "+ckpt_path=x.ckpt"):  # appended, it would be silently ignored
        line = _hydra_error(main, [given], tmp_path, monkeypatch, capsys)
        assert line.startswith("error: ckpt_path= was renamed:") and new in line, given


@pytest.mark.parametrize("below", ["", "/sub"])
def test_a_run_folder_that_is_a_file_is_one_line_and_the_file_is_kept(below, tmp_path, monkeypatch, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("my notes")
    argv = ["experiment=smoke", f"hydra.run.dir={existing}{below}"]
    line = _hydra_error(train_entry.main, argv, tmp_path, monkeypatch, capsys)
    assert f"error: {existing}{below}: cannot make the run folder there" in line and "hydra.run.dir" in line
    assert existing.read_text() == "my notes"


def test_tracebacks_stay_available_for_those_who_ask(tmp_path):
    done = run_module(["-m", "mean_geo.train", "dataset=sues2000"], tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "MissingConfigException" in done.stderr


# --- a diverging run --------------------------------------------------------------------------------
def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    line = run_hydra_entry(
        train_entry.main, ["experiment=smoke", "optim.optimizer.lr=100000"], tmp_path, monkeypatch, capsys
    )
    assert line.startswith("error: training diverged at step ")
    assert "loss nan" in line or "loss inf" in line
    assert "loss_infonce" in line and "lower the learning rate (optim.optimizer.lr=100000 now)" in line
    assert "no checkpoint had been written yet" in line
    assert not (tmp_path / "run" / "metrics.json").exists()  # nothing was ranked


def test_a_run_that_diverges_later_keeps_its_last_good_checkpoint(tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    args = [
        "experiment=smoke",
        "trainer.max_epochs=2",
        "eval.plots=false",
        "+callbacks.jump._target_=tests.helpers.divergence.LearningRateJump",
        "+callbacks.jump.epoch=1",
        "+callbacks.jump.lr=1e9",
    ]
    line = run_hydra_entry(train_entry.main, args, tmp_path, monkeypatch, capsys)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert "training diverged at step " in line and "(epoch 2)" in line
    assert line.endswith(f"the last good checkpoint is kept: {last}")
    kept = torch.load(last, map_location="cpu", weights_only=True)
    assert kept["epoch"] == 0  # written at the end of the healthy epoch, not overwritten
    assert all(bool(torch.isfinite(v).all()) for v in kept["state_dict"].values() if v.is_floating_point())


# --- non-finite embeddings --------------------------------------------------------------------------
def _embeddings(n: int, broken_rows: tuple[int, ...] = ()) -> torch.Tensor:
    emb = torch.nn.functional.normalize(torch.randn(n, 8, generator=torch.Generator().manual_seed(n)), dim=1)
    for row in broken_rows:
        emb[row, row % 8] = math.nan if row % 2 else math.inf
    return emb


def test_the_evaluator_refuses_non_finite_embeddings_instead_of_ranking_them():
    ids = torch.arange(6)
    with pytest.raises(NonFiniteError, match="query embeddings: 2 of 6 are not finite"):
        evaluate(_embeddings(6, (1, 4)), ids, _embeddings(6), ids)
    with pytest.raises(NonFiniteError, match="d2s gallery embeddings: 1 of 6 are not finite"):
        evaluate_conventions("d2s", _embeddings(6), ids, _embeddings(6, (3,)), ids)
    assert evaluate(_embeddings(6), ids, _embeddings(6), ids)["R@1"] >= 0  # finite ones still rank


def test_eval_of_a_checkpoint_with_nan_weights_is_one_line(tmp_path, monkeypatch, capsys, data_dir):
    ckpt = torch.load(LEGACY / "last.ckpt", map_location="cpu", weights_only=True)
    stem = next(k for k in ckpt["state_dict"] if k.startswith("model.backbone") and k.endswith("weight"))
    ckpt["state_dict"][stem] = torch.full_like(ckpt["state_dict"][stem], math.nan)
    broken = tmp_path / "broken.ckpt"
    torch.save(ckpt, broken)
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    line = run_hydra_entry(eval_entry.main, [f"ckpt={broken}", "eval.plots=false"], tmp_path, monkeypatch, capsys)
    assert "query embeddings:" in line and "are not finite (NaN or inf)" in line and "nothing was ranked" in line


def test_an_index_with_non_finite_embeddings_is_refused_when_read_and_never_written(tmp_path):
    stored = load_file(str(LEGACY / "gallery.index"))
    from safetensors import safe_open

    with safe_open(str(LEGACY / "gallery.index"), framework="pt") as fh:
        meta = fh.metadata()
    for bad in (math.nan, math.inf, -math.inf):
        emb = stored["embeddings"].clone()
        emb[2, 0] = bad
        path = tmp_path / "bad.index"
        save_file({"embeddings": emb}, str(path), metadata=meta)
        with pytest.raises(Exception, match=rf"index={path}: tile embeddings: 1 of 7 are not finite"):
            read_index(path)
    with pytest.raises(NonFiniteError, match="tile embeddings: 1 of 2 are not finite"):
        write_index(
            tmp_path / "new.index", _embeddings(2, (1,)), [tmp_path / "a.png"] * 2, tmp_path, [None, None], "0" * 16, 64
        )
    assert not (tmp_path / "new.index").exists()


def test_an_index_with_positions_off_the_globe_is_refused(tmp_path):
    from safetensors import safe_open

    with safe_open(str(LEGACY / "gallery.index"), framework="pt") as fh:
        meta, emb = dict(fh.metadata()), fh.get_tensor("embeddings")
    tiles = json.loads(meta["tiles"])
    for latlon in ([91.0, 0.0], [0.0, 181.0]):
        tiles[0]["latlon"] = latlon
        path = tmp_path / "off.index"
        save_file({"embeddings": emb}, str(path), metadata={**meta, "tiles": json.dumps(tiles)})
        with pytest.raises(Exception, match="tile 0 in metadata 'tiles'"):
            read_index(path)


# --- coordinates that cover part of a set -----------------------------------------------------------
def test_metres_are_over_the_queries_whose_distances_are_known():
    nan = math.nan
    errors = torch.tensor([[0.0, 100.0], [30.0, nan], [nan, nan], [200.0, 10.0]], dtype=torch.float64)
    found = ranked_distance_metrics(errors, ks=(1, 2), thresholds_m=(50,))
    # rows 0 and 3 are known: Dis@1 = (0 + 200) / 2, Dis@2 = ((0 + 100) / 2 + (200 + 10) / 2) / 2
    assert found["metres_queries"] == 2
    assert found["Dis@1"] == pytest.approx(100.0) and found["Dis@2"] == pytest.approx(77.5)
    assert found["Acc@50m"] == pytest.approx(50.0)
    assert ranked_distance_metrics(torch.full((2, 1), nan), ks=(1,)) == {"metres_queries": 0.0}


def test_an_index_over_a_partly_located_gallery_says_how_many_tiles_have_no_coordinates(tmp_path, sues_world, caplog):
    gallery = sues_world / "Training" / "300" / "satellite"
    places = sorted(p.name for p in gallery.iterdir())
    csv = tmp_path / "some.csv"
    csv.write_text("place,lat,lon\n" + "".join(f"{p},47.{i},8.5\n" for i, p in enumerate(places[:2])))
    from mean_geo.training.composition import build_trainer
    from mean_geo.training.index_pipeline import PartWriter

    trainer = build_trainer(
        {
            "_target_": "lightning.pytorch.Trainer",
            "accelerator": "cpu",
            "devices": 1,
            "logger": False,
            "enable_progress_bar": False,
        },
        callbacks=[PartWriter()],
        logger=False,
    )
    with caplog.at_level("WARNING"):
        out = index_entry.build_index(gallery, LEGACY / "export", tmp_path / "g.index", trainer, coords_csv=csv)
    missing = len(places) - 2
    assert f"{missing} of {len(places)} tiles have no coordinates" in caplog.text
    assert sum(t["latlon"] is None for t in read_index(out).tiles) == missing


# --- logs a person can read -------------------------------------------------------------------------
def test_a_file_gets_progress_lines_and_a_terminal_gets_the_bar():
    class Terminal:
        def isatty(self):
            return True

    class File:
        def isatty(self):
            return False

    assert isinstance(progress_bar(stream=File()), LineProgressBar)
    assert not isinstance(progress_bar(stream=Terminal()), LineProgressBar)


@pytest.mark.slow
def test_training_into_a_file_writes_readable_progress_lines(tmp_path, data_dir):
    done = run_module(
        ["-m", "mean_geo.train", "experiment=smoke", "callbacks.progress_bar.every_s=0", "eval.plots=false"],
        tmp_path,
        env={"MEAN_GEO_DATA": str(data_dir), "MEAN_GEO_LOGS": str(tmp_path / "logs")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = done.stdout + done.stderr
    assert "\r" not in console and "it/s]" not in console  # no bar redrawn in the file
    lines = [line for line in console.splitlines() if "steps/s" in line and ", step " in line]
    assert len(lines) >= 10 and "loss " in lines[-1] and "left" in lines[-1]
    (task_log,) = (tmp_path / "logs").rglob("train.log")
    assert sum(", step " in line for line in task_log.read_text().splitlines()) == len(lines)


SHIPPED = [
    *(f"hardware={n}" for n in ("auto", "cpu", "cpu_bf16", "ddp", "ddp_cpu", "gpu", "gpu_amp", "slurm_local")),
    *(f"debug={n}" for n in ("fdr", "limit", "overfit")),
    *(f"experiment={n}" for n in ("demo", "demo_convnext", "smoke")),
    *(f"dataset={n}" for n in ("sues200", "synthetic", "university1652")),
    "callbacks=early_stopping",
]


@pytest.mark.parametrize("choice", SHIPPED)
def test_every_shipped_config_passes_the_table(choice, tmp_path):

    from tests.helpers.config import compose_config, quiet_overrides

    cfg = compose_config("train", [choice, *quiet_overrides(tmp_path, tmp_path)])
    check_settings(checked_values(cfg, "train"), "train")
    assert checked_values(cfg, "train")["dataset"]["image_size"] == cfg.dataset.image_size
