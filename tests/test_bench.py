import json

import pytest

from mean_geo.bench.__main__ import main, plan, ratios


@pytest.mark.slow
def test_quick_bench_writes_results_and_checks_metrics_agree(tmp_path):
    out = tmp_path / "results.json"
    assert main(["--quick", "--only", "eval", "search", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["machine"]["torch"] and payload["device"] in ("cpu", "cuda")
    evals = [r for n, r in payload["results"].items() if n.startswith("eval")]
    assert len(evals) == 2 and all(r["metrics_equal"] for r in evals)
    assert all(r["peak_rss_mb"] > 0 for r in payload["results"].values())
    assert any(k.endswith("ours vs official loop") for k in payload["ratios"])


def test_full_plan_covers_the_issue():
    names = [n for n, _, _ in plan(quick=False, gpu=False)]
    for needle in (
        "train 384px fp32",
        "train 384px bf16",
        "train 256px fp32",
        "embed 384px bf16+channels_last",
        "eval U1652 D2S 37855x951",
        "eval U1652 S2D 701x51355",
        "search 1M top-10 faiss",
        "authors' train 256px fp32",
    ):
        assert needle in names


def test_ratios_are_computed_from_the_same_run():
    results = {
        "train 256px fp32": {"images_per_s": 2.0, "pairs_per_s": 1.0},
        "train 256px bf16": {"images_per_s": 5.0, "pairs_per_s": 2.5},
        "authors' train 256px fp32": {"pairs_per_s": 0.5, "ours_vs_authors": 1.7},
    }
    r = ratios(results)
    assert r["train 256px bf16 / fp32"] == 2.5
    assert r["train 256px fp32: ours / authors' (interleaved)"] == 1.7
    assert r["train 256px: our best setting / authors' fp32 (separate processes)"] == 5.0
