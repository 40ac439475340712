"""Run an entry point as a user does: a new interpreter, in a folder of the test's choosing."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def run_module(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """``python <args>`` in ``cwd`` with ``env`` added and ``unset`` removed; HYDRA_FULL_ERROR is
    always removed, so user errors print as users see them."""
    drop = {"HYDRA_FULL_ERROR", *unset}
    environment = {k: v for k, v in os.environ.items() if k not in drop}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def run_hydra_entry(main, args: list[str], tmp_path: Path, monkeypatch, capsys) -> str:
    """Run a Hydra entry point in this process as the command line would (patched ``sys.argv``),
    expecting one ``error:`` line and exit code 2; returns that line.  Saves a new interpreter."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["mean_geo", *args, f"hydra.run.dir={tmp_path}/run"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def exit_code(main, args: list[str]) -> int:
    """The exit code of a tool's ``main(args)``: its return value, or the code of the SystemExit
    with which a user error ends it (one ``error:`` line, code 2)."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


def train_tiny(dataset: str, root: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m mean_geo.train dataset=<dataset> dataset.root=<root>`` at the smallest sizes (the
    test backbone, 32 px, one epoch, no plots), as a user would run it on a miniature copy."""
    args = [
        "-m",
        "mean_geo.train",
        f"dataset={dataset}",
        f"dataset.root={root}",
        "hardware=cpu",
        "model.backbone=test_convnext",
        "model.pretrained=false",
        "dataset.image_size=32",
        "dataset.num_workers=0",
        "trainer.max_epochs=1",
        "eval.plots=false",
        *extra,
    ]
    return run_module(args, cwd=cwd, timeout=600)


#: what Python's logging prints when a handler that an earlier in-process Hydra run attached still
#: points at a stream pytest has closed since (not what a user sees: their stderr stays open)
_STALE_HANDLER = re.compile(r"--- Logging error ---\n.*?\nArguments: [^\n]*\n", re.S)


def without_stale_logging(err: str) -> str:
    """``err`` without the messages of logging handlers left on closed streams by earlier tests."""
    return _STALE_HANDLER.sub("", err)


@contextlib.contextmanager
def serving_module(
    args: list[str], cwd: Path, ready: str, env: dict[str, str] | None = None, timeout: float = 180
) -> Iterator[str]:
    """``python <args>`` started in ``cwd`` and left running while the block runs; yields the
    first line of its output that contains ``ready`` (a server's "listening on …" line) and stops
    the process after the block (a server that exits or never says it is ready fails here)."""
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"not ready within {timeout} s: {''.join(seen)[-2000:]}") from None
            if line is None:
                raise AssertionError(f"exited with {proc.wait()} before it was ready: {''.join(seen)[-2000:]}")
            seen.append(line)
            if ready in line:
                break
        yield line.strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A TCP port nothing listens on now (on loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
