"""A full disk never leaves a truncated file under a final name, and ends in one line."""

from __future__ import annotations

import errno
import sys

import pytest
import torch

from mean_geo import train as train_entry
from mean_geo.errors import CheckpointError
from mean_geo.training.checkpoint_io import AtomicCheckpointIO


def _disk_fills_up_after(n_bytes: int):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(n_bytes // 4)}, f)  # some bytes reach the disk ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then it is full

    return real_save, save


def test_checkpoint_is_complete_or_absent(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    final = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, final)
    good = final.read_bytes()
    _, failing = _disk_fills_up_after(4096)
    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(CheckpointError) as exc:
        io.save_checkpoint({"w": torch.zeros(1000)}, final)
    assert (
        str(exc.value)
        == f"{final}: checkpoint not saved (no space left on the device); nothing was written under that name"
    )
    assert final.read_bytes() == good  # the previous last.ckpt is intact
    assert sorted(p.name for p in final.parent.iterdir()) == ["last.ckpt"]  # no partial file left


def test_full_disk_during_training_is_one_line(tmp_path, monkeypatch, capsys, data_dir):
    _, failing = _disk_fills_up_after(4096)
    monkeypatch.setattr("mean_geo.training.checkpoint_io.torch.save", failing)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("MEAN_GEO_DATA", str(data_dir))
    args = ["mean_geo", "experiment=smoke", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/run"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        train_entry.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "no space left on the device" in lines[0]
    assert not [p for p in (tmp_path / "run").rglob("*.ckpt")]  # nothing under a final name
    assert not [p for p in (tmp_path / "run").rglob(".*.partial-*")]


def test_a_full_disk_anywhere_is_one_line(capsys, monkeypatch):
    from mean_geo.cli import report_user_errors

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @report_user_errors
    def writes_a_world():
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/synthetic/x/0001/0.jpg")
        except OSError as exc:
            raise RuntimeError("while writing the world") from exc

    with pytest.raises(SystemExit) as exc:
        writes_a_world()
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert err == (
        "error: no space left on the device while writing /data/synthetic/x/0001/0.jpg; free some space and run again"
    )


def test_metrics_and_exports_are_complete_or_absent(tmp_path, monkeypatch):
    from pathlib import Path

    from mean_geo.inference.export import export
    from mean_geo.utils import atomic

    metrics = tmp_path / "metrics.json"
    atomic.write_text(metrics, '{"old": 1}')
    real_write = Path.write_text

    def full(self, text, *args, **kwargs):
        real_write(self, text[:3], *args, **kwargs)  # a few bytes, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        atomic.write_text(metrics, '{"new": 2}')
    monkeypatch.setattr(Path, "write_text", real_write)
    assert metrics.read_text() == '{"old": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    legacy = Path(__file__).parent / "fixtures" / "legacy_v1" / "last.ckpt"
    monkeypatch.setattr(
        "mean_geo.inference.export_format.save_file",
        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")),
    )
    with pytest.raises(OSError):
        export(legacy, tmp_path / "exported")
    assert not (tmp_path / "exported").exists() and not list(tmp_path.glob(".exported.partial-*"))
