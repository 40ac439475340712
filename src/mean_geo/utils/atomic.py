"""Files and folders that are complete or absent: written under a partial name beside the final
one, then renamed (a rename within a folder is atomic).  A full disk or a kill leaves no truncated
file under a name that other code (or a user) trusts.

The one writer of the package: checkpoints, exports, indexes and their parts, metrics, tables and
synthetic worlds all go through it, so the partial names (``.<name>.partial-<pid>…``) and their
clean-up after a killed writer are the same everywhere.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def partial_name(path: Path) -> Path:
    """Where ``path`` is written before it is complete: hidden, beside it, named by this process."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def _remove(partial: Path) -> None:
    if partial.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a path to write to; on success it becomes ``path``, on any error it is removed."""
    path = Path(path)
    partial = partial_name(path)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        _remove(partial)
        raise


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a new partial folder to fill; on success it becomes ``path`` (which may exist only as an
    empty folder), on any error it is removed.  Stale partials of killed writers are cleared first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    partial = unique_partial_dir(path)
    try:
        yield partial
        if path.exists():
            path.rmdir()  # empty, or this raises: nothing is written over
        partial.rename(path)
    except BaseException:
        _remove(partial)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Dict rows as a CSV file (a header of every key, in first-seen order), complete or absent."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def unique_partial_dir(path: Path) -> Path:
    """A new, empty partial folder for ``path`` (unique even within one process: several writers
    of the same folder may race, and the caller decides who wins the rename)."""
    return Path(tempfile.mkdtemp(prefix=f"{partial_name(path).name}-", dir=path.parent))


def remove_stale_partials(path: Path) -> None:
    """Remove the partial files and folders of ``path`` whose writer is dead (kill -9 leaves them)."""
    for partial in path.parent.glob(f".{path.name}.partial-*"):
        pid = partial.name.removeprefix(f".{path.name}.partial-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(partial)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs.  A writer killed a moment ago can linger as a zombie
    (dead, not yet reaped by its parent): ``kill(pid, 0)`` succeeds on it, its state says ``Z``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """``/proc/<pid>/stat``'s state field is ``Z`` (or ``X``: dead); False where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last ")"
    return stat[stat.rfind(")") + 1 :].split()[:1] in (["Z"], ["X"])
