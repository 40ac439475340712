"""method=dino through the entry points: a LoRA run trains, resumes, runs under DDP, exports merged
weights that embed as the adapted model does, and index + localize run on the export without peft."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mean_geo import train as train_entry
from mean_geo.inference.export import export
from mean_geo.inference.loading import load_model
from mean_geo.training.lit_module import MEANLitModule
from tests.helpers.config import compose_config, quiet_overrides

#: a randomly initialised DINOv3 ViT-S/16 with LoRA at 32 px (2 x 2 patches): seconds a step on 2 cores
LORA = [
    "experiment=smoke",
    "method=dino",
    "model.backbone=vit_small_patch16_dinov3",
    "model.finetune=lora",
    "model.lora.r=4",
    "dataset.image_size=32",
    "trainer.limit_train_batches=3",
    "eval.plots=false",
]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("dino_lora")
    metrics = train_entry.run(compose_config("train", [*LORA, *quiet_overrides(tmp, data_dir)]))
    return tmp / "out", metrics


def test_a_lora_run_trains_and_its_checkpoint_holds_the_adapters(lora_run):
    out, metrics = lora_run
    assert 0 <= metrics["test/d2s/R@1"] <= 100
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = ckpt["state_dict"].keys()
    assert any(".lora_A." in k for k in keys) and any(".base_layer." in k for k in keys)
    spec = ckpt["hyper_parameters"]["spec"]["model"]
    assert spec["architecture"] == "dino" and spec["finetune"] == "lora" and spec["lora"]["r"] == 4


def test_the_merged_export_embeds_as_the_adapted_model(lora_run, tmp_path):
    out, _ = lora_run
    last = out / "checkpoints" / "last.ckpt"
    folder = export(last, tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["finetune"] == "full" and config["model"]["lora"] is None
    lit = MEANLitModule.load_from_checkpoint(last, map_location="cpu")  # the adapters, unmerged
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = lit.model.eval()(x)
        merged = load_model(folder).model(x)
    torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)
    assert load_model(folder).fingerprint == load_model(last).fingerprint  # checkpoint and export agree


def test_index_and_localize_run_on_the_export_without_peft(lora_run, tmp_path, data_dir):
    out, _ = lora_run
    folder = export(out / "checkpoints" / "last.ckpt", tmp_path / "export")
    world = next(data_dir.rglob("coordinates.csv")).parent
    gallery = world / "Testing" / "150" / "gallery_satellite"
    photo = next((world / "Testing" / "150" / "query_drone").rglob("*.*"))
    script = f"""
import sys
import lightning as L
from mean_geo.index import build_index
from mean_geo.inference.localization import localize
from mean_geo.retrieval.index_store import read_index
from mean_geo.training.index_pipeline import PartWriter
trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[PartWriter()])
index = build_index({str(gallery)!r}, {str(folder)!r}, {str(tmp_path / "gallery.index")!r}, trainer, num_workers=0)
found = localize([__import__("pathlib").Path({str(photo)!r})], read_index(index), {str(folder)!r}, k=3)
assert len(found[0]) == 3, found
assert "peft" not in sys.modules, "inference imported peft"
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_a_lora_run_resumes(lora_run, tmp_path, data_dir):
    out, _ = lora_run
    last = out / "checkpoints" / "last.ckpt"
    steps = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    overrides = [*LORA, f"resume={last}", "trainer.max_epochs=2", "test=false"]
    train_entry.run(compose_config("train", [*overrides, *quiet_overrides(tmp_path, data_dir)]))
    resumed = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * steps


def test_init_from_a_lora_checkpoint_starts_a_full_run_from_the_merged_weights(lora_run, tmp_path, data_dir):
    """init_from=<LoRA checkpoint> with model.finetune=full: the new run's backbone starts from the
    merged weights (a learning rate of ~0 keeps them, so the exports embed alike)."""
    out, _ = lora_run
    last = out / "checkpoints" / "last.ckpt"
    full = [o for o in LORA if not o.startswith(("model.finetune", "model.lora"))]
    overrides = [*full, f"init_from={last}", "optim.optimizer.lr=1e-12", "test=false", "trainer.limit_train_batches=1"]
    train_entry.run(compose_config("train", [*overrides, *quiet_overrides(tmp_path, data_dir)]))
    started = load_model(tmp_path / "out" / "checkpoints" / "last.ckpt")
    assert started.spec["model"]["finetune"] == "full"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(started.model(x), load_model(last).model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_lora_run_trains_under_ddp(tmp_path, data_dir):
    """hardware=ddp_cpu (2 gloo processes): the frozen backbone weights are not DDP's unused parameters."""
    overrides = [*LORA, "hardware=ddp_cpu", "dataset.batch_size=2", "trainer.max_steps=2", "test=false"]
    train_entry.run(compose_config("train", [*overrides, *quiet_overrides(tmp_path, data_dir)]))
    ckpt = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2


@pytest.mark.parametrize("dataset", ["university1652", "sues200", "denseuav", "gta_uav"])
def test_method_dino_composes_with_every_dataset(dataset, tmp_path):
    cfg = compose_config("train", ["method=dino", f"dataset={dataset}", *quiet_overrides(tmp_path, tmp_path)])
    assert cfg.model.architecture == "dino" and cfg.loss.name == "sample4geo"
    assert cfg.dataset.image_size == 448 and cfg.model.backbone == "vit_base_patch14_dinov2.lvd142m"
    assert cfg.optim.optimizer._target_ == "torch.optim.SGD" and cfg.trainer.max_epochs == 40
    assert Path(cfg.paths.output_dir).name == "out"
