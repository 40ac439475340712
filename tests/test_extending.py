"""docs/extending.md, followed as written: a registered architecture of your own
trains, exports and loads back; a registered dataset layout is selectable by name."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from torch import nn

import mean_geo
from mean_geo import train as train_entry
from mean_geo.datamodules import University1652DataModule, register_datamodule
from mean_geo.inference.export import export
from mean_geo.models.mean import MEAN
from mean_geo.training.composition import build_datamodule
from tests.helpers.config import compose_config, quiet_overrides


@mean_geo.register_architecture("mean_projected")
class ProjectedMEAN(MEAN):
    """MEAN with a learned projection of the retrieval embedding (a new branch on the test path)."""

    retrieval_parts = (*MEAN.retrieval_parts, "projection")

    def __init__(self, num_classes: int, projection_dim: int = 32, **kwargs) -> None:
        super().__init__(num_classes, **kwargs)
        self.projection = nn.Linear(self.embedding_dim, projection_dim)
        self.embedding_dim = projection_dim

    def features(self, x: torch.Tensor):
        fmap, pooled, embedding = super().features(x)
        return fmap, pooled, self.projection(embedding)


@register_datamodule("u1652_mirror")
class MirroredU1652(University1652DataModule):
    """A layout of your own (here: University-1652's, under another name)."""


def test_a_registered_architecture_trains_exports_and_loads_back(tmp_path, data_dir):
    overrides = ["experiment=smoke", "eval.plots=false"]
    overrides += ["model.architecture=mean_projected", "+model.projection_dim=24"]
    cfg = compose_config("train", [*overrides, *quiet_overrides(tmp_path, data_dir)])
    metrics = train_entry.run(cfg)
    assert 0 <= metrics["test/d2s/R@1"] <= 100
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    from_ckpt = mean_geo.load_model(ckpt)
    folder = export(ckpt, tmp_path / "export")
    from_export = mean_geo.load_model(folder)
    for loaded in (from_ckpt, from_export):
        assert isinstance(loaded.model, ProjectedMEAN) and loaded.model.embedding_dim == 24
    assert from_ckpt.fingerprint == from_export.fingerprint
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        out = from_export.model(x)
        assert out.shape == (2, 24) and torch.equal(out, from_ckpt.model(x))
    # the projection is part of what the fingerprint identifies
    with torch.no_grad():
        from_export.model.projection.weight.add_(1.0)
    from mean_geo.inference.loading import fingerprint

    assert fingerprint(from_export.model, from_export.image_size, (from_export.mean, from_export.std)) != (
        from_export.fingerprint
    )


def test_a_registered_dataset_layout_is_selected_by_name(u1652_world):
    overrides = ["dataset=university1652", "dataset.name=u1652_mirror", f"dataset.root={u1652_world}"]
    cfg = compose_config("train", overrides)
    dm = build_datamodule(cfg.dataset)
    assert type(dm) is MirroredU1652
    dm.setup("fit")
    assert len(dm.train_set) > 0


def test_the_readme_plugin_example_trains_and_its_checkpoint_names_the_plugin(tmp_path, data_dir):
    """Followed as a user would: save the docs' module, run its training command, export."""
    from tests.helpers.cli import run_module
    from tests.test_readme_commands import readme_commands, readme_module

    (tmp_path / "my_mean.py").write_text(readme_module("my_mean.py"))
    train, export_cmd = [c for c in readme_commands() if "my_mean" in c]
    env = {"MEAN_GEO_DATA": str(data_dir), "WANDB_MODE": "offline"}
    done = run_module(shlex.split(train)[1:], tmp_path, env=env, unset=("MEAN_GEO_LOGS",))
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = tmp_path / "logs" / "my_mean" / "checkpoints" / "last.ckpt"
    without = shlex.split(export_cmd.replace(" --plugins my_mean", ""))[1:]
    refused = run_module(without, tmp_path, env=env)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
    relative = ckpt.relative_to(tmp_path)  # as the docs write it
    assert lines[0].startswith(f"error: ckpt={relative}: model.architecture='my_mean': unknown architecture")
    assert "it was built with plugins=[my_mean]: pass the same plugins=[...]" in lines[0]
    assert not (tmp_path / "exports" / "my_mean").exists()
    done = run_module(shlex.split(export_cmd)[1:], tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "exports" / "my_mean" / "config.json").read_text())
    assert config["model"]["architecture"] == "my_mean" and config["plugins"] == ["my_mean"]
    assert config["embedding_dim"] == 24
    # the plugin's loss term was trained with and logged beside MEAN's own terms
    spec = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["spec"]
    assert spec["loss"]["name"] == "my_loss" and spec["loss"]["weight_spread"] == 0.05
    (metrics_csv,) = (tmp_path / "logs" / "my_mean").rglob("metrics.csv")
    header = metrics_csv.read_text().splitlines()[0].split(",")
    assert {"train/loss_spread", "train/loss_infonce", "train/loss"} <= set(header)


def test_a_plugin_that_does_not_import_is_one_line(tmp_path, monkeypatch, capsys):
    from tests.helpers.cli import run_hydra_entry

    def refused(plugins: str) -> str:
        return run_hydra_entry(train_entry.main, ["experiment=smoke", plugins], tmp_path, monkeypatch, capsys)

    assert refused("plugins=[no_such_module]").startswith(
        "error: plugins: cannot import 'no_such_module' (ModuleNotFoundError"
    )
    assert "plugins=['my-module']: expected a list of module names" in refused("plugins=[my-module]")


@pytest.mark.parametrize(
    "body, shown",
    [
        ("raise ValueError('bad default')", "ValueError: bad default at "),
        ("import json\njson.loads('{')", "JSONDecodeError: "),  # raised in json: the plugin's line named
        ("CONFIG = {}\nCONFIG['missing']", "KeyError: 'missing' at "),
        ("def broken(:\n    pass", "SyntaxError: "),
        ("import no_such_dependency_of_the_plugin", "ModuleNotFoundError: No module named 'no_such_dependency"),
    ],
)
def test_a_plugin_that_raises_while_importing_is_one_line_naming_it(body, shown, tmp_path, monkeypatch, capsys):
    """Anything a user's module raises at import (not only ImportError) ends in one line naming the
    plugin and the exception; with MEAN_GEO_VERBOSE=1 the traceback, the plugin's own frame included."""
    import sys

    from tests.helpers.cli import run_hydra_entry

    module = f"raising_plugin_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{module}.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = run_hydra_entry(train_entry.main, ["experiment=smoke", f"plugins=[{module}]"], tmp_path, monkeypatch, capsys)
    assert line.startswith(f"error: plugins: cannot import '{module}' (") and shown in line
    if "at " in shown:
        assert f"{module}.py:" in line  # where in the plugin it raised
    sys.modules.pop(module, None)
    monkeypatch.setenv("MEAN_GEO_VERBOSE", "1")
    monkeypatch.setattr(
        sys, "argv", ["mean_geo", "experiment=smoke", f"plugins=[{module}]", f"hydra.run.dir={tmp_path}/v"]
    )
    with pytest.raises(SystemExit):
        train_entry.main()
    err = capsys.readouterr().err
    assert "Traceback" in err and "cannot import" in err and f"{module}" in err
