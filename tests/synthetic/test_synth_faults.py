"""Faults while writing a world: kill -9, SIGTERM and two writers of the same world."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mean_geo.synthetic.writer import WorldSpec, existing_spec, write_world
from mean_geo.utils.atomic import remove_stale_partials

COMMAND = ["-m", "mean_geo.synth", "--layout", "sues200", "--locations", "60", "--size", "128"]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *COMMAND, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_for_partial(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        partial = list(out.parent.glob(f".{out.name}.partial-*"))
        if partial and any(partial[0].rglob("*.jpg")):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    raise AssertionError("the generator wrote nothing")


def _processes_writing(out: Path) -> list[int]:
    """Processes whose command line names ``out`` (the generator and its forked workers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(out).encode() in (proc / "cmdline").read_bytes():
                stat = (proc / "stat").read_text()
                if stat.split(") ", 1)[1][0] != "Z":  # not a zombie
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_kill_9_leaves_no_workers_and_the_next_run_clears_the_partial_folder(tmp_path):
    out = tmp_path / "world"
    proc = _start(out)
    _wait_for_partial(out, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    end = time.time() + 10
    while _processes_writing(out) and time.time() < end:
        time.sleep(0.2)
    assert _processes_writing(out) == []  # the pool's workers died with their parent
    assert list(tmp_path.glob(".world.partial-*"))  # what kill -9 leaves ...
    spec = WorldSpec("sues200", locations=4, image_size=32, drone_per_location=1)
    write_world(spec, tmp_path / "other", progress=False)  # a different world: its partials only
    assert list(tmp_path.glob(".world.partial-*"))
    write_world(WorldSpec("sues200", locations=4, image_size=32, drone_per_location=1), out, progress=False)
    assert not list(tmp_path.glob(".world.partial-*"))  # ... is cleared by the next writer of that world
    assert existing_spec(out) is not None


@pytest.mark.slow
def test_sigterm_removes_the_partial_folder_at_once(tmp_path):
    out = tmp_path / "world"
    proc = _start(out)
    _wait_for_partial(out, proc)
    started = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert time.time() - started < 15  # does not render the rest of the world first
    assert proc.returncode != 0
    assert not list(tmp_path.glob(".world.partial-*")) and not out.exists()


def test_two_writers_of_the_same_world_both_succeed(tmp_path):
    spec = WorldSpec("sues200", locations=6, image_size=32, drone_per_location=1)
    out = tmp_path / "world"
    out.mkdir()  # an empty root (made by a launcher, say): each writer removes it, then renames
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: write_world(spec, out, workers=1, progress=False), range(2)))
    assert results == [out, out] and existing_spec(out) == spec.to_json()
    assert not list(tmp_path.glob(".world.partial-*"))


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_a_writer_killed_a_moment_ago_is_dead_while_still_a_zombie(tmp_path):
    """``kill -9`` and an immediate rerun: the killed writer is a zombie until its parent reaps it,
    and ``kill(pid, 0)`` still succeeds on it; its partial folder is stale all the same."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    end = time.time() + 10
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.time() < end:
        time.sleep(0.05)  # exited, not reaped: a zombie
    stale = tmp_path / f".world.partial-{proc.pid}-abc"
    stale.mkdir()
    mine = tmp_path / f".world.partial-{os.getpid()}-def"
    mine.mkdir()
    remove_stale_partials(tmp_path / "world")
    assert not stale.exists() and mine.exists()  # the zombie's removed, a live writer's kept
    proc.wait()
