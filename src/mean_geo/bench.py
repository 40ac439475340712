"""``python -m mean_geo.bench [--suite main|gpu] [--quick] [--only NAME…] [--out FILE]``: training
and embedding speed, gradient caching's memory, evaluation vs the official loop, large-gallery
search, and (with ``MEAN_REF``) the authors' model side by side; ``--suite gpu`` what only a GPU
shows (AMP, compile, CUDA memory, DDP), skipped cleanly without one.

Prints a table and writes results.json into this run's folder (``logs/bench/runs/<time>/``, or
``--out``; ``make bench`` writes ``bench/results.json``, the file the README quotes).  Every case runs
in a fresh process so its peak memory is its own; ratios compare numbers measured in the same run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console

from mean_geo.benchmarks.suite import SUITES, plan, ratios, run_case, table
from mean_geo.benchmarks.timing import machine
from mean_geo.cli import ToolParser, report_user_errors
from mean_geo.utils import atomic
from mean_geo.utils.output import writable_file


def default_out() -> Path:
    """Like every other run: under the logs folder (MEAN_GEO_LOGS), one folder per run."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(os.environ.get("MEAN_GEO_LOGS", "logs")) / "bench" / "runs" / stamp / "results.json"


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    p = ToolParser(prog="python -m mean_geo.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="results file (default: logs/bench/runs/<time>/results.json)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks the suite runs")
    p.add_argument("--only", nargs="*", default=None, help="run the cases whose name contains one of these")
    p.add_argument(
        "--suite",
        choices=SUITES,
        default="main",
        help="gpu: what only a GPU shows (make bench-gpu); skipped without one",
    )
    args = p.parse_args(argv)
    gpu = torch.cuda.is_available()
    results: dict = {}
    start = time.perf_counter()
    out = writable_file(args.out if args.out else default_out(), "--out")  # before hours of measuring
    for name, fn, kwargs in plan(args.quick, gpu, args.suite):
        if args.only and not any(s in name for s in args.only):
            continue
        if args.suite == "gpu" and not gpu:  # the script is ready; this machine has no GPU to run it
            results[name] = {"case": fn, "args": kwargs, "skipped": "no CUDA GPU on this machine"}
            continue
        print(f"[bench] {name} ...", flush=True)
        results[name] = {"case": fn, "args": kwargs, **run_case(fn, kwargs)}
    ratio = ratios(results)
    payload = {
        "machine": machine(),
        "device": "cuda" if gpu else "cpu",
        "quick": args.quick,
        "suite": args.suite,
        "wall_s": round(time.perf_counter() - start, 1),
        "results": results,
        "ratios": ratio,
    }
    atomic.write_text(out, json.dumps(payload, indent=2) + "\n")
    Console().print(table(results, ratio))
    print(f"wrote {out}")
    if args.suite == "gpu" and not gpu:
        print("no CUDA GPU here: every GPU line is marked skipped (run make bench-gpu on a GPU machine)")
    return 0 if not any("error" in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
