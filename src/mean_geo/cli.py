"""Entry-point plumbing: user mistakes become one line on stderr and exit code 2."""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from omegaconf.errors import MissingMandatoryValue

from mean_geo.errors import MeanGeoError

T = TypeVar("T")
#: the Hydra configs ship inside the package, so an installed (non-editable) mean_geo finds them
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


def _user_error(exc: BaseException) -> MeanGeoError | None:
    """The project error behind ``exc`` (Hydra's instantiate wraps constructor errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MeanGeoError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _full_disk(exc: BaseException | None) -> OSError | None:
    """The ENOSPC behind ``exc``, if a full disk is what went wrong."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(err: BaseException) -> str:
    """The user's line of a project error.  An error raised in a DataLoader worker comes back with
    the worker's whole traceback in its message; its last line is the project's own message."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]  # "mean_geo.errors.DatasetLayoutError: <the message>"
        text = re.sub(rf"^(?:\w+\.)*{type(err).__name__}: ", "", last)
    return text.splitlines()[0] if text else type(err).__name__


def report_user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Print project errors as ``error: …`` (traceback with HYDRA_FULL_ERROR=1 or MEAN_GEO_VERBOSE=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            verbose = os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("MEAN_GEO_VERBOSE")
            full_disk = _full_disk(exc)
            if full_disk is not None and not verbose:
                where = f" while writing {full_disk.filename}" if full_disk.filename else ""
                print(f"error: no space left on the device{where}; free some space and run again", file=sys.stderr)
                sys.exit(2)
            if isinstance(exc, MissingMandatoryValue) and not verbose:
                key = getattr(exc, "full_key", None) or "a required argument"
                print(f"error: {key} is required; pass {key}=... on the command line", file=sys.stderr)
                sys.exit(2)
            err = _user_error(exc)
            if err is None or verbose:
                raise
            print(f"error: {one_line(err)}", file=sys.stderr)
            sys.exit(2)

    return wrapper
