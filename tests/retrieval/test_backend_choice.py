"""search backend=auto: a measured choice, cached per machine, with the fixed backends' results."""

import json
import time

import pytest
import torch

from mean_geo.retrieval import backend_choice
from mean_geo.retrieval.search import topk_search


def exact_unit(n, d, seed):
    """Components on a 2^-6 grid: every dot product is exact in fp32, so kernels that sum in another
    order give bit-identical scores and the backends must agree exactly."""
    x = torch.randint(-8, 9, (n, d), generator=torch.Generator().manual_seed(seed)).float() / 64
    return x


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEAN_GEO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(backend_choice, "CALIBRATE_MIN_PAIRS", 1000)
    monkeypatch.setattr(backend_choice, "CALIBRATION_PAIRS", 300 * 2048)
    return tmp_path / backend_choice.CACHE_FILE


def test_auto_calibrates_once_caches_and_equals_the_fixed_backends(cache, monkeypatch):
    pytest.importorskip("faiss")
    q, g = exact_unit(300, 24, 0), exact_unit(5000, 24, 1)
    g[100:140] = g[7]  # a run of 41 tied items, past faiss' margin
    q[:5] = g[7]
    s_auto, i_auto = topk_search(q, g, k=10)
    stored = json.loads(cache.read_text())
    ((machine, shapes),) = stored.items()
    assert torch.__version__ in machine
    verdict = shapes["q<=512|d=24|k=10|float32"]
    assert verdict["backend"] in ("torch", "faiss") and set(verdict["seconds"]) == {"torch", "faiss"}
    for backend in ("torch", "faiss"):
        s, i = topk_search(q, g, k=10, backend=backend)
        assert torch.equal(i, i_auto) and torch.equal(s, s_auto), backend
    assert i_auto[0].tolist() == [7, *range(100, 109)]  # ties: the lower gallery index first

    def no_second_calibration(*args, **kwargs):
        raise AssertionError("calibrated again despite the cache")

    monkeypatch.setattr(backend_choice, "calibrate", no_second_calibration)
    assert torch.equal(topk_search(q, g, k=10)[1], i_auto)


def test_the_cached_verdict_is_what_auto_runs(cache, monkeypatch):
    pytest.importorskip("faiss")
    q = exact_unit(50, 8, 2)

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated despite a cached verdict")

    monkeypatch.setattr(backend_choice, "calibrate", no_calibration)
    for backend in ("faiss", "torch"):
        key = backend_choice.shape_key(50, 8, 5, torch.float32)
        cache.write_text(json.dumps({backend_choice.machine_key(): {key: {"backend": backend}}}))
        assert backend_choice.choose_backend(50, 400, 8, 5, q.device, q.dtype, topk_search) == backend


def test_kernel_limits_and_threads_are_another_machine(monkeypatch):
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(name, raising=False)  # the kernel-limited lane runs with them set
    base = backend_choice.machine_key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert backend_choice.machine_key() != base
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert backend_choice.machine_key() != base
    finally:
        torch.set_num_threads(threads)


def test_calibration_searches_the_problems_own_number_of_queries(tmp_path, monkeypatch):
    """Which backend wins turns on the query count (faiss 5× slower at 64 queries, 1.4× faster at
    1,000 on the AMD EPYC): the sample keeps it, up to the query chunk, and cuts the gallery."""
    pytest.importorskip("faiss")
    monkeypatch.setenv("MEAN_GEO_CACHE_DIR", str(tmp_path))
    shapes = []

    def record(n_query, n_gallery, *args):
        shapes.append((n_query, n_gallery))
        return {"torch": 2.0, "faiss": 1.0}

    monkeypatch.setattr(backend_choice, "calibrate", record)
    cpu = torch.device("cpu")
    for n_query in (64, 5000, 1000):  # 1,000 queries share 5,000's bucket: its cached verdict
        assert backend_choice.choose_backend(n_query, 10**6, 512, 10, cpu, torch.float32, topk_search) == "faiss"
    pairs = backend_choice.CALIBRATION_PAIRS
    assert shapes == [(64, pairs // 64), (1024, pairs // 1024)]


def test_a_lopsided_first_round_is_the_verdict(monkeypatch):
    calls = []

    def search(q, g, k, backend):
        calls.append((backend, len(q)))
        if backend == "faiss" and len(q) > 8:
            time.sleep(0.05)

    times = backend_choice.calibrate(32, 64, 8, 5, torch.float32, ["torch", "faiss"], search)
    assert min(times, key=times.__getitem__) == "torch"
    assert [c for c in calls if c[1] > 8] == [("torch", 32), ("faiss", 32)]  # one round, no second


def test_small_searches_skip_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("MEAN_GEO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(backend_choice, "calibrate", lambda *a, **k: pytest.fail("calibrated a tiny search"))
    assert backend_choice.choose_backend(100, 1000, 16, 10, torch.device("cpu"), torch.float32, topk_search) == "torch"
    assert not list(tmp_path.iterdir())


def test_a_broken_cache_is_measured_again_and_replaced(cache):
    pytest.importorskip("faiss")
    cache.write_text("{not json")
    choice = backend_choice.choose_backend(64, 4096, 8, 5, torch.device("cpu"), torch.float32, topk_search)
    assert json.loads(cache.read_text())[backend_choice.machine_key()]["q<=64|d=8|k=5|float32"]["backend"] == choice


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        '"faiss"',
        '{"MACHINE": "faiss"}',
        '{"MACHINE": {"q<=64|d=8|k=5|float32": "faiss"}}',
        '{"MACHINE": {"q<=64|d=8|k=5|float32": {"backend": ["faiss"]}}}',
        '{"MACHINE": {"q<=64|d=8|k=5|float32": {"backend": "gpu"}}}',
        '{"MACHINE": {"q<=64|d=8|k=5|float32": {"backend": "torch", "seconds": 3}}}',
    ],
)
def test_a_cache_of_another_shape_is_set_aside_with_a_warning_and_measured_again(cache, content, caplog):
    """Valid JSON of the wrong structure (what a user forcing a backend by hand writes) crashed
    every search large enough to calibrate; it is only a cache."""
    pytest.importorskip("faiss")
    cache.write_text(content.replace("MACHINE", backend_choice.machine_key()))
    choice = backend_choice.choose_backend(64, 4096, 8, 5, torch.device("cpu"), torch.float32, topk_search)
    assert json.loads(cache.read_text())[backend_choice.machine_key()]["q<=64|d=8|k=5|float32"]["backend"] == choice
    assert "measured again" in caplog.text and str(cache) in caplog.text


def test_an_unwritable_cache_folder_still_searches(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MEAN_GEO_CACHE_DIR", str(blocker / "below"))
    monkeypatch.setattr(backend_choice, "CALIBRATE_MIN_PAIRS", 1000)
    q, g = exact_unit(40, 8, 4), exact_unit(300, 8, 5)
    assert torch.equal(topk_search(q, g, k=3)[1], topk_search(q, g, k=3, backend="torch")[1])


def test_faiss_follows_the_tie_rule_within_its_margin():
    pytest.importorskip("faiss")
    g = exact_unit(60, 6, 6)
    g[[3, 20, 30, 41, 59]] = 8 / 64  # five copies of the best match, spread out: faiss returns them in any order
    q = g[[30, 0]]
    s, i = topk_search(q, g, k=3, backend="faiss")
    assert i[0].tolist() == [3, 20, 30]
    ts, ti = topk_search(q, g, k=3, backend="torch")
    assert torch.equal(i, ti) and torch.equal(s, ts)
