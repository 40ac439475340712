"""Command-line plumbing shared by every entry point.

Two styles, by what a command takes: the pipelines that compose a config (``train``, ``eval``,
``index``, ``check``) are Hydra apps (``key=value`` overrides, ``--help``, ``--cfg job``, ``-m``);
the small tools (``synth``, ``export``, ``localize``, ``profile``, ``bench``) use argparse flags
(``--name value``), and also accept ``name=value`` for their options.  Either way a user mistake
becomes one ``error: …`` line on stderr and exit code 2 (:func:`report_user_errors`).
"""

from __future__ import annotations

import argparse
import contextlib
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


def _conf_dir() -> str:
    """The Hydra configs' folder.  Their one copy is the checkout's top-level ``conf/``; a wheel
    installs it as ``mean_geo/conf`` (pyproject's package-dir mapping).  An editable install leaves
    it in the checkout, since setuptools' editable finder maps no folder without ``__init__.py``."""
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "conf", package.parent.parent / "conf"):
        if (folder / "train.yaml").is_file():
            return str(folder)
    raise ImportError(f"mean_geo's configs are missing: neither {package / 'conf'} nor the checkout's conf/ exists")


#: the folder Hydra composes every pipeline's config from
CONF_DIR = _conf_dir()


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


def user_asked_for_tracebacks() -> bool:
    """HYDRA_FULL_ERROR=1 (set by the user, not by :mod:`mean_geo.cli.hydra_app`) or MEAN_GEO_VERBOSE."""
    ours = os.environ.get("MEAN_GEO_HYDRA_RAISES") == "1"
    return (os.environ.get("HYDRA_FULL_ERROR") == "1" and not ours) or bool(os.environ.get("MEAN_GEO_VERBOSE"))


def report_user_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Print project errors as ``error: …`` (traceback with HYDRA_FULL_ERROR=1 or MEAN_GEO_VERBOSE=1).

    Anything else is re-raised, tagged ``raised_by_task`` so that :mod:`mean_geo.cli.hydra_app`
    never mistakes it for a mistake Hydra found in the command line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            verbose = user_asked_for_tracebacks()
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
                with contextlib.suppress(AttributeError):  # a few built-in exceptions take no attributes
                    exc.raised_by_task = True  # type: ignore[attr-defined]
                raise
            print(f"error: {one_line(err)}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def whole_number_at_least(least: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {least}")
        return value

    return parse


class ToolParser(argparse.ArgumentParser):
    """argparse for the small tools: a usage mistake is one ``error:`` line (exit 2), like every
    other user error, and ``name=value`` is read as ``--name value``."""

    def error(self, message: str) -> None:  # argparse prints the usage block too; one line is enough
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        return super().parse_args(self._as_flags(sys.argv[1:] if args is None else list(args)), namespace)

    def _as_flags(self, argv: list[str]) -> list[str]:
        options = {a.dest: a for a in self._actions if a.option_strings}
        out: list[str] = []
        for token in argv:
            key, sep, value = token.partition("=")
            action = options.get(key.replace("-", "_")) if sep and not token.startswith("-") else None
            if action is None or Path(token).exists():
                out.append(token)
            elif action.nargs == 0:  # a switch: name=true / name=false
                if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    self.error(f"{token}: expected {key}=true or {key}=false")
                if value.lower() in ("1", "true", "yes"):
                    out.append(action.option_strings[-1])
            else:
                out += [action.option_strings[-1], value]
        return out
