"""``python -m mean_geo.report``: runs grouped by protocol and configuration, seeds as mean ± std,
the four formats agreeing with the metrics.json files, and one-line errors."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from mean_geo import report
from mean_geo.reporting.runs import find_runs
from mean_geo.reporting.tables import build_tables
from mean_geo.retrieval.protocol import SplitLists, convention_protocol, protocol_fingerprint, split_hash
from tests.helpers.browser import REMOTE, rendered_dom
from tests.helpers.cli import exit_code

SPLIT = {"d2s": SplitLists(["q/1.jpg", "q/2.jpg"], ["g/1.png", "g/2.png", "g/3.png"], 2)}


def fingerprint(**changes) -> dict:
    settings = dict(
        dataset="sues200",
        layout="sues200",
        synthetic=True,
        altitude=[150],
        image_size=64,
        splits=SPLIT,
        conventions=["d2s"],
        drop_unmatched_gallery=True,
        flip_tta=False,
        multi_query="none",
        rerank=None,
    )
    settings.update(changes)
    return protocol_fingerprint(**settings)


def write_run(folder: Path, seed: int, r1: float, ap: float, method: str = "mean", **protocol) -> Path:
    folder.mkdir(parents=True)
    payload = {
        "metrics": {"test/d2s/R@1": r1, "test/d2s/R@5": 100.0, "test/d2s/AP": ap},
        "protocol": {"fingerprint": fingerprint(**protocol)},
        "run": {"method": method, "backbone": "test_convnext", "seed": seed, "overrides": [f"seed={seed}"]},
    }
    (folder / "metrics.json").write_text(json.dumps(payload))
    return folder


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for seed, (r1, ap) in enumerate([(50.0, 60.0), (60.0, 65.0), (55.0, 70.0)], 1):
        write_run(root / "multirun" / str(seed), seed, r1, ap)
    write_run(root / "dac", 1, 70.0, 72.0, method="dac")
    write_run(root / "big", 1, 80.0, 81.0, image_size=96)
    return root


def test_split_hash_is_order_free_and_sees_another_list():
    a = SplitLists(["x", "y"], ["g"], 1)
    assert split_hash(a) == split_hash(SplitLists(["y", "x"], ["g"], 1))
    assert split_hash(a) != split_hash(SplitLists(["x", "z"], ["g"], 1))
    assert split_hash(a) != split_hash(SplitLists(["x"], ["y", "g"], 1))  # a query moved to the gallery


def test_a_convention_depends_on_what_changes_its_numbers_only():
    plain, multi = fingerprint(), fingerprint(multi_query="mean", conventions=["d2s", "d2s_multi_mean"])
    assert convention_protocol(plain, "d2s")["id"] == convention_protocol(multi, "d2s")["id"]
    reranked = fingerprint(rerank={"k1": 20, "k2": 6, "lambda_value": 0.3})
    assert convention_protocol(plain, "d2s")["id"] == convention_protocol(reranked, "d2s")["id"]
    other = fingerprint(rerank={"k1": 10, "k2": 6, "lambda_value": 0.3})
    assert convention_protocol(other, "d2s_rerank")["id"] != convention_protocol(reranked, "d2s_rerank")["id"]
    for change in ({"image_size": 96}, {"drop_unmatched_gallery": False}, {"flip_tta": True}, {"altitude": [200]}):
        assert convention_protocol(fingerprint(**change), "d2s")["id"] != convention_protocol(plain, "d2s")["id"]


def test_seeds_are_one_row_and_another_protocol_its_own_table(sweep):
    tables, differ = build_tables(find_runs([sweep]))
    assert differ == ["image_size"]
    assert [t.label for t in tables] == ["d2s, image_size 64", "d2s, image_size 96"]
    same, other = tables
    assert [row.config["method"] for row in same.rows] == ["dac", "mean"]  # ranked by R@1
    seeds = same.rows[1]
    assert seeds.n == 3 and sorted(seeds.seeds) == [1, 2, 3]
    assert seeds.mean("R@1") == pytest.approx(55.0) and seeds.std("R@1") == pytest.approx(5.0)
    assert seeds.std("AP") == pytest.approx(statistics.stdev([60.0, 65.0, 70.0]))
    assert same.columns == ["method"] and len(other.rows) == 1


def report_of(sweep: Path, out: Path, *options: str) -> str:
    assert exit_code(report.main, [str(sweep), "--out", str(out), *options]) == 0
    return out.read_text()


def test_the_four_formats_agree_with_the_metrics(sweep, tmp_path):
    md = report_of(sweep, tmp_path / "r.md")
    assert "| mean | 3 | 55.00 ± 5.00 | 100.00 ± 0.00 | 65.00 ± 5.00 |" in md
    assert "| dac | 1 | 70.00 | 100.00 | 72.00 |" in md
    assert "## Table 2: d2s, image_size 96" in md and "the protocols differ in: image_size" in md
    rows = list(csv.DictReader((tmp_path / "r.csv").open())) if report_of(sweep, tmp_path / "r.csv") else []
    by = {(r["protocol_fields"], r["method"]): r for r in rows}
    seeds = by[("d2s, image_size 64", "mean")]
    assert float(seeds["R@1"]) == pytest.approx(55.0) and float(seeds["AP_std"]) == pytest.approx(5.0)
    assert seeds["n"] == "3" and sorted(seeds["seeds"].split()) == ["1", "2", "3"]
    assert float(by[("d2s, image_size 96", "mean")]["R@1"]) == 80.0
    tex = report_of(sweep, tmp_path / "r.tex")
    assert tex.count("\\toprule") == 2 and "mean & 3 & 55.00 $\\pm$ 5.00" in tex
    assert "image\\_size 96" in tex and "R@1 &" in tex
    page = report_of(sweep, tmp_path / "r.html")
    assert REMOTE.search(page) is None and page.count("class='report-row'") == 3


def test_chromium_shows_the_report_tables(sweep, tmp_path):
    (sweep / "big" / "plots").mkdir()
    (sweep / "big" / "plots" / "browser.html").write_text("<html><body>browser</body></html>")
    report_of(sweep, tmp_path / "out" / "report.html")
    dom = rendered_dom(tmp_path / "out" / "report.html")
    assert dom.count('class="report-table"') == 2 and dom.count('class="report-row"') == 3
    assert "55.00 ± 5.00" in dom
    assert 'href="../sweep/big/plots/browser.html"' in dom


def test_bad_input_is_one_line(sweep, tmp_path, capsys):
    cases = [
        ([str(tmp_path / "nowhere"), "--out", str(tmp_path / "a.md")], "nowhere: no such folder"),
        ([str(sweep), "--out", str(tmp_path / "a.pdf")], "expected a file ending in .md, .csv, .tex, .html"),
        ([str(sweep), "--out", str(tmp_path / "a.md"), "--columns", "colour"], "--columns colour: expected some of"),
        ([str(tmp_path / "empty"), "--out", str(tmp_path / "a.md")], "no metrics.json under"),
        # every option that names things is checked against what the runs hold, with the closest names
        ([str(sweep), "--out", str(tmp_path / "a.md"), "--sort", "R1"], "--sort R1: the runs have only"),
        ([str(sweep), "--out", str(tmp_path / "a.md"), "--sort", "r@1"], "did you mean R@1"),
        ([str(sweep), "--out", str(tmp_path / "a.md"), "--metrics", "R@1,AP,mAP"], "--metrics mAP: the runs have"),
        ([str(sweep), "--out", str(tmp_path / "a.md"), "--conventions", "d2s,d2ss"], "--conventions d2ss: the runs"),
    ]
    (tmp_path / "empty").mkdir()
    for args, expected in cases:
        assert exit_code(report.main, args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
    broken = sweep / "broken" / "metrics.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    assert exit_code(report.main, [str(sweep), "--out", str(tmp_path / "a.md")]) == 2
    assert f"{broken}: not a readable metrics.json" in capsys.readouterr().err
    broken.unlink()
    existing = tmp_path / "kept.md"
    existing.write_text("mine")
    assert exit_code(report.main, [str(sweep), "--out", str(existing)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and existing.read_text() == "mine"
