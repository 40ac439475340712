"""The README's sweep → report path, run as documented (new interpreters, a fresh folder): three
seeds and one run at another image size give one report whose seeds are one row and whose other
run sits in its own table; every evaluation's error browser opens in chromium."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from tests.helpers.browser import rendered_dom
from tests.helpers.cli import run_module

pytestmark = pytest.mark.slow

SWEEP = ["-m", "mean_geo.train", "-m", "experiment=smoke", "seed=1,2,3", "hydra.sweep.dir=logs/sweep"]
OTHER = ["-m", "mean_geo.train", "experiment=smoke", "dataset.image_size=48", "hydra.run.dir=logs/sweep/size48"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("sweep")
    for args in (SWEEP, OTHER):
        done = run_module(args, work, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    return work


def metrics_of(work: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in sorted((work / "logs" / "sweep").rglob("metrics.json"))}


def test_every_metrics_json_has_its_protocol(sweep):
    runs = metrics_of(sweep)
    assert len(runs) == 4
    sizes = {folder.name: payload["protocol"]["fingerprint"]["image_size"] for folder, payload in runs.items()}
    assert sizes == {"0": 64, "1": 64, "2": 64, "size48": 48}
    fingerprints = [payload["protocol"]["fingerprint"] for payload in runs.values()]
    d2s = fingerprints[0]["directions"]["d2s"]
    # the smoke world: 5 test places x 4 altitudes x 3 drone photos; 12 tiles, 5 of them test places
    assert (d2s["queries"], d2s["gallery"], d2s["ranked_gallery"]) == (60, 12, 5)
    assert len({f["directions"]["d2s"]["split"] for f in fingerprints}) == 1  # the same split every run
    assert len({f["id"] for f in fingerprints}) == 2  # two image sizes, two protocols
    assert [p["run"]["seed"] for p in runs.values()] == [1, 2, 3, 1]


def test_the_report_summarises_seeds_and_separates_the_other_size(sweep):
    for suffix in (".md", ".csv", ".tex", ".html"):
        done = run_module(["-m", "mean_geo.report", "logs/sweep", "--out", f"report{suffix}"], sweep)
        assert done.returncode == 0, done.stderr
    assert "the protocols differ in: image_size" in done.stdout
    runs = metrics_of(sweep)
    seeds = [p["metrics"] for f, p in runs.items() if f.name != "size48"]
    rows = {(r["convention"], r["image_size"]): r for r in csv.DictReader((sweep / "report.csv").open())}
    assert len(rows) == 4  # d2s and s2d, at 64 and 48 px
    for direction in ("d2s", "s2d"):
        row = rows[(direction, "64")]
        for metric in ("R@1", "R@5", "AP"):
            values = [m[f"test/{direction}/{metric}"] for m in seeds]
            assert float(row[metric]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{metric}_std"]) == pytest.approx(statistics.stdev(values))
        assert row["n"] == "3" and row["protocol_fields"] == f"{direction}, image_size 64"
        single = runs[sweep / "logs" / "sweep" / "size48"]["metrics"][f"test/{direction}/R@1"]
        assert float(rows[(direction, "48")]["R@1"]) == pytest.approx(single) and rows[(direction, "48")]["n"] == "1"
    md = (sweep / "report.md").read_text()
    mean_r1 = statistics.fmean(m["test/d2s/R@1"] for m in seeds)
    assert f"| 3 | {mean_r1:.2f} ± " in md and "## Table 2: d2s, image_size 64" in md
    tex = (sweep / "report.tex").read_text()
    assert f"& 3 & {mean_r1:.2f} $\\pm$ " in tex and tex.count("\\toprule") == 4
    dom = rendered_dom(sweep / "report.html")
    assert dom.count('class="report-table"') == 4 and dom.count('class="browser-link"') == 8


def test_a_smoke_evaluations_browser_in_chromium(sweep):
    folder = sweep / "logs" / "sweep" / "0"
    payload = json.loads((folder / "metrics.json").read_text())
    dom = rendered_dom(folder / "plots" / "browser.html")
    wrong = round(60 * (1 - payload["metrics"]["test/d2s/R@1"] / 100))
    assert f"{wrong} of 60 queries wrong at top-1" in dom
    assert dom.count('class="query-row') == 25 + 5  # the first page of d2s (60 queries), all 5 of s2d
    assert 'class="mark hit"' in dom and 'class="mark miss"' in dom
    assert dom.count('class="map"') == 2 and 'class="link miss"' in dom
