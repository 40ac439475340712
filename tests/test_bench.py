import inspect
import json

import pytest
import torch

from mean_geo.bench import main
from mean_geo.benchmarks import cases
from mean_geo.benchmarks.suite import peak_memory, plan, ratios


@pytest.mark.slow
def test_quick_bench_writes_results_and_checks_metrics_agree(tmp_path):
    out = tmp_path / "results.json"
    threads = torch.get_num_threads()
    assert main(["--quick", "--only", "eval", "search", "rerank", "loader", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the loader case measures one worker, then gives them back
    payload = json.loads(out.read_text())
    assert payload["machine"]["torch"] and payload["device"] in ("cpu", "cuda")
    evals = [r for n, r in payload["results"].items() if n.startswith("eval")]
    assert len(evals) == 2 and all(r["metrics_equal"] for r in evals)
    assert all(r["peak_rss_mb"] > 0 for r in payload["results"].values())
    assert any(k.endswith("ours vs official loop") for k in payload["ratios"])
    (rerank,) = [r for n, r in payload["results"].items() if n.startswith("rerank")]
    # same distances; the speed-up is the bench's to report (a timed assertion fails on a busy machine)
    assert rerank["max_abs_difference"] < 1e-9 and rerank["speedup"] > 0
    assert any(k.endswith("batched vs dense per-item loop") for k in payload["ratios"])
    auto = payload["results"]["search 20k top-10 auto"]
    assert auto["chosen"] in ("torch", "faiss") and auto["calibration_s"] > 0
    assert payload["ratios"]["search 20k top-10 auto / fastest exact fixed backend"] > 0
    loader = payload["results"]["loader 64px"]
    assert (
        loader["pairs"] == 32 and loader["pairs_per_s_per_worker"] > 0 and loader["authors_pairs_per_s_per_worker"] > 0
    )
    assert set(loader["ms_per_pair"]) == set(loader["authors_ms_per_pair"]) == {"read", "decode", "augment", "collate"}
    assert payload["ratios"]["loader 64px: ours / authors' pairs per s per worker"] == loader["ours_vs_authors"]
    floor = loader["uncached_floor_ms_per_pair"]
    assert set(floor) == {"decode", "recompress", "resize"} and all(v > 0 for v in floor.values())
    authors_ms = sum(loader["authors_ms_per_pair"].values())
    assert loader["uncached_ceiling_vs_authors"] == pytest.approx(authors_ms / sum(floor.values()))
    ceiling = payload["ratios"]["loader 64px: the most any pipeline that decodes every epoch can be"]
    assert ceiling == loader["uncached_ceiling_vs_authors"]


def test_the_starvation_line_measures_loader_and_step_and_skips_without_cuda(monkeypatch):
    monkeypatch.setattr(cases, "DEVICE", "cpu")
    assert "skipped" in cases.starvation()
    small = dict(image_size=32, batch=2, workers=1, batches=2, backbone="test_convnext", source_size=48)
    r = cases.starvation(**small, on_cpu=True)
    assert r["loader_pairs_per_s"] > 0 and r["loader_gpu_decode_pairs_per_s"] > 0 and r["step_pairs_per_s"] > 0
    assert r["starved"] == (r["loader_pairs_per_s"] < r["step_pairs_per_s"])


@pytest.mark.parametrize("suite", ["main", "gpu"])
@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("quick", [False, True])
def test_every_planned_case_calls_an_existing_case_with_its_arguments(quick, gpu, suite):
    """A renamed case or argument would only show in a 10-minute full run; bind them here."""
    names = [name for name, _, _ in plan(quick=quick, gpu=gpu, suite=suite)]
    assert len(names) == len(set(names)), "two lines with one name would overwrite each other in results.json"
    for _, fn, kwargs in plan(quick=quick, gpu=gpu, suite=suite):
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


def test_gpu_suite_is_ready_and_skips_cleanly_without_a_gpu(tmp_path, monkeypatch, capsys):
    """`make bench-gpu` on a machine without CUDA: exit 0, every line recorded as skipped, in its
    own results file; with a GPU the same plan runs (its cases bound above)."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    out = tmp_path / "results_gpu.json"
    assert main(["--suite", "gpu", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["suite"] == "gpu" and payload["device"] == "cpu"
    names = [name for name, _, _ in plan(quick=False, gpu=True, suite="gpu")]
    assert list(payload["results"]) == names
    assert all(r["skipped"] == "no CUDA GPU on this machine" for r in payload["results"].values())
    assert any("peak memory chunked / one piece" in r for r in ratios_of_plan(names))
    assert "no CUDA GPU here" in capsys.readouterr().out


def ratios_of_plan(names: list[str]) -> dict:
    """The ratios the GPU run will report, computed on made-up numbers for its lines."""
    fake = {n: {"median_s": 1.0 + i, "peak_gpu_mb": 100.0 * (i + 1), "images_per_s": 1.0} for i, n in enumerate(names)}
    return ratios(fake)


def test_grad_cache_ratios_compare_memory_and_time_of_the_same_batch():
    results = {
        "grad cache 64 pairs 256px fp32: one piece": {"median_s": 30.0, "peak_rss_mb": 12000.0},
        "grad cache 64 pairs 256px fp32: chunks of 8": {"median_s": 40.0, "peak_rss_mb": 3000.0},
    }
    r = ratios(results)
    assert r["grad cache 64 pairs 256px fp32: peak memory chunked / one piece"] == 0.25
    assert r["grad cache 64 pairs 256px fp32: step time chunked / one piece"] == pytest.approx(4 / 3)


def test_the_gpu_suites_ratios_and_memory_are_reported():
    """bench-gpu's lines carry a "gpu " prefix: its ratios (precisions, channels-last, compile, ours
    vs the authors') were matched by the CPU names only and never printed; its memory is the GPU's."""
    results = {
        "gpu train 384px fp32": {"images_per_s": 100.0, "pairs_per_s": 50.0, "peak_gpu_mb": 9000.0},
        "gpu train 384px fp16": {"images_per_s": 250.0, "pairs_per_s": 125.0, "peak_gpu_mb": 5000.0},
        "gpu train 384px bf16+torch.compile": {"images_per_s": 300.0, "pairs_per_s": 150.0},
        "gpu authors' train 384px fp16": {"pairs_per_s": 75.0, "ours_vs_authors": 1.6},
    }
    r = ratios(results)
    assert r["gpu train 384px fp16 / fp32"] == 2.5
    assert r["gpu train 384px bf16+torch.compile / fp32"] == 3.0
    assert r["gpu train 384px fp16: ours / authors' (interleaved)"] == 1.6
    assert r["gpu train 384px: our best setting / authors' fp16 (separate processes)"] == 2.0
    assert peak_memory(results["gpu train 384px fp16"]) == "5000 GPU"
    assert peak_memory({"peak_rss_mb": 812.4}) == "812 RSS"
    named = ratios_of_plan([name for name, _, _ in plan(quick=False, gpu=True, suite="gpu")])
    for ratio in ("gpu train 384px fp16 / fp32", "gpu train 384px bf16+channels_last / fp32"):
        assert ratio in named


def test_the_dino_lines_count_what_trains_and_compare_with_full_fine_tuning():
    from mean_geo.benchmarks.suite import DINO_S, TINY_DINO

    r = cases.dino_step(**DINO_S, **TINY_DINO, finetune="lora")
    assert 0 < r["trainable_m"] < 0.05 * r["total_m"] and r["median_s"] > 0 and r["peak_rss_mb"] > 0
    made_up = {
        "dino ViT-S/16 224px full": {"median_s": 2.0, "peak_rss_mb": 1000.0},
        "dino ViT-S/16 224px lora": {"median_s": 1.5, "peak_rss_mb": 600.0},
        "dino ViT-S/16 224px lora +checkpointing": {"median_s": 2.0, "peak_rss_mb": 450.0},
    }
    found = ratios(made_up)
    assert found["dino ViT-S/16 224px lora: step time / full"] == 0.75
    assert found["dino ViT-S/16 224px lora: peak memory / full"] == 0.6
    assert found["dino ViT-S/16 224px lora +checkpointing: peak memory / without"] == 0.75
