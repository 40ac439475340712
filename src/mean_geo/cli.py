"""Entry-point plumbing: user mistakes become one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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


def report_user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Print project errors as ``error: …`` (traceback with HYDRA_FULL_ERROR=1 or MEAN_GEO_VERBOSE=1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            err = _user_error(exc)
            if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("MEAN_GEO_VERBOSE"):
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
