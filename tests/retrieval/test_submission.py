"""Challenge submissions: the University-160k / UAVM answer.txt format on a hand-made 3-query case."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mean_geo import eval as eval_entry
from mean_geo.errors import ConfigError
from mean_geo.inference.loading import load_model
from mean_geo.inference.localization import embed_images
from mean_geo.inference.submission import write_submission
from tests.helpers.config import compose_config, quiet_overrides
from tests.helpers.paths import FIXTURES

EXPORT = FIXTURES / "legacy_v2" / "export"


def test_hand_made_three_query_case(tmp_path):
    gallery = torch.eye(4)[:, :3]  # tile d is (0, 0, 0): the last of every ranking
    names = ["a", "b", "c", "d"]
    queries = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 1.0], [0.3, 0.5, 0.4]])
    out = write_submission(tmp_path / "answer.txt", queries, gallery, names, k=3)
    assert out.read_text() == "a\tb\tc\nc\tb\ta\nb\tc\ta\n"
    with pytest.raises(ConfigError, match="never overwritten"):
        write_submission(out, queries, gallery, names)


def test_eval_writes_the_challenge_file_in_the_given_query_order(tmp_path, data_dir):
    """`python -m mean_geo.eval ckpt=… eval.submission=answer.txt` on name-masked folders."""
    g = torch.Generator().manual_seed(0)
    for folder, n in (("query_drone_160k", 3), ("gallery_satellite_160k", 12)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            pixels = (torch.rand(48, 48, 3, generator=g) * 255).byte().numpy()
            Image.fromarray(pixels).save(tmp_path / folder / f"{folder[:1]}{i:03d}x.jpg")
    order = ["q002x.jpg", "q000x.jpg", "q001x.jpg"]
    (tmp_path / "query_drone_name.txt").write_text("\n".join(order) + "\n")
    answer = tmp_path / "answer.txt"
    overrides = [
        f"ckpt={EXPORT}",
        f"eval.submission={answer}",
        f"eval.submission_queries={tmp_path / 'query_drone_160k'}",
        f"eval.submission_gallery={tmp_path / 'gallery_satellite_160k'}",
        f"eval.submission_order={tmp_path / 'query_drone_name.txt'}",
    ]
    eval_entry.run(compose_config("eval", [*overrides, *quiet_overrides(tmp_path, data_dir)]))
    lines = answer.read_text().splitlines()
    assert len(lines) == 3 and all(len(line.split("\t")) == 10 for line in lines)
    loaded = load_model(EXPORT)
    gallery = sorted((tmp_path / "gallery_satellite_160k").iterdir())
    g_emb = embed_images(loaded, gallery)
    for line, name in zip(lines, order, strict=True):
        q_emb = embed_images(loaded, [tmp_path / "query_drone_160k" / name])
        expected = [gallery[j].stem for j in (q_emb @ g_emb.T)[0].argsort(descending=True, stable=True)[:10]]
        assert line.split("\t") == expected
