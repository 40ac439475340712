import inspect
import json

import pytest

from mean_geo.bench import main
from mean_geo.benchmarks import cases
from mean_geo.benchmarks.suite import plan, ratios


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


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("quick", [False, True])
def test_every_planned_case_calls_an_existing_case_with_its_arguments(quick, gpu):
    """A renamed case or argument would only show in a 10-minute full run; bind them here."""
    names = [name for name, _, _ in plan(quick=quick, gpu=gpu)]
    assert len(names) == len(set(names)), "two lines with one name would overwrite each other in results.json"
    for _, fn, kwargs in plan(quick=quick, gpu=gpu):
        inspect.signature(getattr(cases, fn)).bind(**kwargs)  # raises TypeError on a wrong argument


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
