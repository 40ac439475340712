"""``backend=auto``: which exact top-k backend is fastest on this machine, for this problem size.

The fastest exact search depends on the CPU (faiss' flat index was 1.4× faster than torch on an
AMD EPYC, 4× slower on an Intel Xeon, same problem), so it is measured, not guessed: a short
calibration (each candidate on a sample of the problem, a few hundred milliseconds) whose verdict
is cached per machine, kernel limits, library versions, thread count and problem shape in the
user's cache folder.  Small problems skip it: their search costs less than measuring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mean_geo.utils import atomic

# a search of fewer (query × gallery) pairs than this takes well under calibrating's time
CALIBRATE_MIN_PAIRS = 2**25
# the calibration searches the problem's own number of queries (up to the query chunk): which backend
# wins turns on it (on the AMD EPYC torch was 5× faster than faiss at 64 queries, faiss 1.1× at 256
# and 1.4× at 1,000), against a gallery sized to make it about this many pairs (~0.1 s a backend)
CALIBRATION_QUERIES = 1024
CALIBRATION_PAIRS = 2**23
# a first round this lopsided is the verdict; closer ones are measured a second time
CLEAR_WIN = 1.5
# part of the cache key: verdicts of an older calibration are measured again
CALIBRATION_VERSION = 2
# environment variables that change which kernels torch, oneDNN and MKL run
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")
CACHE_FILE = "search_backends.json"
#: what a cached verdict may name
FIXED_BACKENDS = ("torch", "faiss")
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$MEAN_GEO_CACHE_DIR``, else ``$XDG_CACHE_HOME/mean_geo``, else ``~/.cache/mean_geo``."""
    explicit = os.environ.get("MEAN_GEO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mean_geo"


def import_faiss():
    """faiss, or None when it is not installed.  Its loader logs each SIMD build it could not load
    (``No module named 'faiss.swigfaiss_avx512'``) at INFO, which reads like an error in a run's
    log; that logger is held to warnings while it loads."""
    loader_log = logging.getLogger("faiss.loader")
    level = loader_log.level
    loader_log.setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:
        return None
    finally:
        loader_log.setLevel(level)
    return faiss


def faiss_available() -> bool:
    return import_faiss() is not None


def candidates(device: torch.device) -> list[str]:
    """The exact backends worth timing here: faiss only on CPU and only when installed."""
    if device.type != "cpu" or not faiss_available():
        return ["torch"]
    return ["torch", "faiss"]


def machine_key() -> str:
    """What decides which kernels run: the CPU model and its instruction sets, the kernel limits
    set in the environment, torch's and faiss' versions and torch's thread count."""
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    for line in info:
        field, _, value = line.partition(":")
        if field.strip() == "model name":
            cpu = value.strip()
        elif field.strip() == "flags":
            flags = value.strip()
            break
    parts = [
        cpu,
        hashlib.sha256(flags.encode()).hexdigest()[:12],
        f"torch={torch.__version__}",
        f"threads={torch.get_num_threads()}",
        f"calibration={CALIBRATION_VERSION}",
    ]
    faiss = import_faiss()
    if faiss is not None:
        parts.append(f"faiss={faiss.__version__}")
    parts += [f"{name}={os.environ[name]}" for name in KERNEL_ENV if name in os.environ]
    return "|".join(parts)


def shape_key(n_query: int, dim: int, k: int, dtype: torch.dtype) -> str:
    """Queries bucketed by powers of two up to the chunk of 1,024 (faiss and torch block queries
    differently at small counts; beyond a chunk the time per pair is flat); the gallery size does
    not enter: both backends stream it."""
    q_bucket = 2 ** min(10, max(0, math.ceil(math.log2(max(n_query, 1)))))
    return f"q<={q_bucket}|d={dim}|k={k}|{str(dtype).removeprefix('torch.')}"


def choose_backend(
    n_query: int,
    n_gallery: int,
    dim: int,
    k: int,
    device: torch.device,
    dtype: torch.dtype,
    search: Callable[..., object],
) -> str:
    """The fastest exact backend for a (n_query × n_gallery) search on this machine.

    Args:
        n_query: queries in the search.
        n_gallery: gallery items.
        dim: embedding size.
        k: matches per query.
        device: where the query lives (a GPU always uses torch).
        dtype: the query's dtype (part of the cache key).
        search: the search function, called as ``search(q, g, k=k, backend=name)``.

    Returns:
        A fixed backend name (``torch`` or ``faiss``).
    """
    options = candidates(device)
    if len(options) == 1 or n_query * n_gallery < CALIBRATE_MIN_PAIRS:
        return "torch"
    machine, shape = machine_key(), shape_key(n_query, dim, k, dtype)
    cache = _read_cache()
    known = cache.get(machine, {}).get(shape)
    if isinstance(known, dict) and known.get("backend") in options:
        return str(known["backend"])
    sample_query = min(n_query, CALIBRATION_QUERIES)
    sample_gallery = min(n_gallery, CALIBRATION_PAIRS // sample_query)
    times = calibrate(sample_query, sample_gallery, dim, k, dtype, options, search)
    best = min(times, key=times.__getitem__)
    cache.setdefault(machine, {})[shape] = {"backend": best, "seconds": times}
    _write_cache(cache)
    return best


def calibrate(
    n_query: int,
    n_gallery: int,
    dim: int,
    k: int,
    dtype: torch.dtype,
    options: list[str],
    search: Callable[..., object],
) -> dict[str, float]:
    """Seconds of each backend on random unit vectors of the problem's shape (after one warm-up
    each, which also starts the thread pools): the best of two rounds, or the first round alone when
    it is a clear win (:data:`CLEAR_WIN`)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(n_query, dim, generator=gen), dim=1).to(dtype)
    g = torch.nn.functional.normalize(torch.randn(n_gallery, dim, generator=gen), dim=1).to(dtype)
    times: dict[str, float] = {name: math.inf for name in options}
    for name in options:
        search(q[:8], g[:256], k=k, backend=name)
    for _ in range(2):  # interleaved: a drift of a shared machine hits every backend alike
        for name in options:
            start = time.perf_counter()
            search(q, g, k=k, backend=name)
            times[name] = min(times[name], time.perf_counter() - start)
        if max(times.values()) > CLEAR_WIN * min(times.values()):
            break
    return {name: round(t, 6) for name, t in times.items()}


def _read_cache() -> dict:
    """The cached verdicts.  It is only a cache: an unreadable file, or one of another shape (valid
    JSON a user edited to force a backend, say), is set aside with a warning and measured again;
    entries of the expected shape in a partly foreign file are kept."""
    path = cache_dir() / CACHE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); search backends are measured again", path, exc)
        return {}
    kept = {
        machine: {shape: v for shape, v in verdicts.items() if _is_verdict(v)}
        for machine, verdicts in (data.items() if isinstance(data, dict) else ())
        if isinstance(verdicts, dict)
    }
    dropped = _count_verdicts(data) - sum(len(v) for v in kept.values())
    if not isinstance(data, dict) or dropped:
        log.warning(
            "%s: not the shape this version writes ({machine: {problem: {'backend': 'torch'|'faiss', "
            "'seconds': {...}}}}); the entries of another shape are ignored and measured again",
            path,
        )
    return kept


def _is_verdict(value: object) -> bool:
    return (
        isinstance(value, dict)
        and value.get("backend") in FIXED_BACKENDS
        and isinstance(value.get("seconds", {}), dict)
    )


def _count_verdicts(data: object) -> int:
    if not isinstance(data, dict):
        return 1
    return sum(len(v) if isinstance(v, dict) else 1 for v in data.values())


def _write_cache(cache: dict) -> None:
    """Atomic replace; a cache folder that cannot be written only means calibrating again."""
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        atomic.write_text(cache_dir() / CACHE_FILE, json.dumps(cache, indent=1, sort_keys=True))
    except OSError:
        pass
