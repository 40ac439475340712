"""Where a writer may write: the one check every writer makes before its work (report, export,
index, the decoded cache, plots, localize's strips, benchmarks).

A folder is made where it is missing; what stands in the way is one line naming the option, the path
and the reason: a file where a folder must be, no permission, a read-only file system.  Writability
is probed by creating a file, not by ``os.access`` (which a root user's run, a read-only mount and
ACLs each answer wrongly in some case).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from mean_geo.errors import ConfigError


def writable_folder(folder: str | Path, key: str, create: bool = True, shown: str | Path | None = None) -> Path:
    """``folder``, made if missing and checked writable.

    Args:
        folder: the folder a writer will write into.
        key: the option or setting that named it (``--out``, ``dataset.cache_dir``), for the message.
        create: make it now; False only checks that it could be made (before work that may be
            refused, so nothing is left behind: its nearest existing folder is probed instead).
        shown: the path the user gave (a file inside ``folder``), for the message.

    Returns:
        The folder, as a ``Path``.

    Raises:
        ConfigError: it cannot be made or written into.
    """
    folder = Path(folder).expanduser()
    shown = folder if shown is None else shown
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise ConfigError(f"{key}={shown}: cannot write there: {blocker} is a file, not a folder")
    probed = folder if create else next((p for p in (folder, *folder.parents) if p.exists()), folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        probe, name = tempfile.mkstemp(prefix=".write_probe_", dir=probed)
        os.close(probe)
        os.unlink(name)
    except OSError as exc:
        reason = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or type(exc).__name__)
        raise ConfigError(f"{key}={shown}: cannot write there ({reason})") from None
    return folder


def writable_file(path: str | Path, key: str, create: bool = True) -> Path:
    """``path``'s folder made (``create``) and checked (:func:`writable_folder`); ``path`` itself must not be a folder.

    Returns:
        The path, as a ``Path``.

    Raises:
        ConfigError: it is a folder, or its folder cannot be made or written into.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{key}={path}: is a folder; give a file name")
    writable_folder(path.parent, key, create, shown=path)
    return path


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (itself included) when it is not a folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None
