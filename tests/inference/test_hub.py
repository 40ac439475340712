"""Sharing models the way the field does (huggingface_hub): save_pretrained / push_to_hub /
from_pretrained, all offline: a local folder, a hand-made Hub cache, a recorded upload."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

import mean_geo
from mean_geo.errors import CheckpointError
from tests.helpers.numerics import assert_same_tensors, assert_within_float32_rounding
from tests.helpers.paths import FIXTURES

FIXTURE = FIXTURES / "legacy_v2"
EXPECTED = load_file(str(FIXTURE / "expected_embeddings.safetensors"))


def assert_same_model(loaded) -> None:
    """The fixture's model: its tensors bit for bit, its embeddings within float32 rounding (they
    were computed on the machine that wrote the fixture)."""
    assert_same_tensors(loaded.model, load_file(str(FIXTURE / "export" / "model.safetensors")))
    assert_within_float32_rounding(loaded.model, EXPECTED["images"], EXPECTED["embeddings"])


def test_save_pretrained_writes_an_export_with_a_hub_card_and_reads_back(tmp_path):
    model = mean_geo.load_model(FIXTURE / "export")
    model.save_pretrained(tmp_path / "shared")
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "shared" / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: mean_geo" in front and "pipeline_tag: image-feature-extraction" in front
    again = mean_geo.from_pretrained(str(tmp_path / "shared"))
    assert again.fingerprint == model.fingerprint == "4f6e921913afe584"
    assert_same_model(again)


def test_from_pretrained_reads_a_repo_from_the_hub_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "cache" / "models--someone--mean-sues200"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(FIXTURE / "export", snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    loaded = mean_geo.from_pretrained("someone/mean-sues200", cache_dir=tmp_path / "cache", local_files_only=True)
    assert_same_model(loaded)


def test_a_repo_that_cannot_be_had_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="someone/absent: cannot get this model from the Hub") as exc:
        mean_geo.from_pretrained("someone/absent", cache_dir=tmp_path, local_files_only=True)
    assert "\n" not in str(exc.value)


def test_push_to_hub_uploads_the_export_folder(tmp_path, monkeypatch):
    import huggingface_hub

    uploaded: dict[str, bytes] = {}

    class Repo:
        repo_id = "someone/mean-test"

    def create_repo(self, repo_id, **kwargs):
        assert repo_id == "someone/mean-test" and kwargs.get("private") is True
        return Repo()

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
        return f"https://huggingface.co/{repo_id}"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = mean_geo.load_model(FIXTURE / "export").push_to_hub("someone/mean-test", private=True)
    assert url == "https://huggingface.co/someone/mean-test"
    assert sorted(uploaded) == ["README.md", "config.json", "model.safetensors"]
    assert uploaded["model.safetensors"] == (FIXTURE / "export" / "model.safetensors").read_bytes()
