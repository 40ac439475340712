"""``plugins=[my_pkg.my_module]``: the user's own modules, imported before anything is built
(mmengine's ``custom_imports``), so what they register (an architecture, a dataset layout) can be
named in the config.  Only the command line (or the user's own config) imports a plugin: a
checkpoint or an export records the plugin names it was trained with, as text, and a loader that
misses a name only says which plugin to pass (:func:`mean_geo.files.specs.model_spec`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Sequence

from mean_geo.errors import ConfigError
from mean_geo.files.specs import plugin_names


def import_plugins(names: Sequence[str] | str | None, where: str = "plugins") -> list[str]:
    """Import each module of ``names`` (dotted module names); returns them, checked.

    The launch folder is searched first, as ``python -m`` does, so a ``my_module.py`` beside the
    user's command works without installing it.

    Raises:
        ConfigError: a name that is not a module name, or a module that does not import.
    """
    if isinstance(names, str):  # the tools' --plugins a,b (or plugins=[a,b] as Hydra spells it)
        names = [n.strip() for n in names.strip().strip("[]").split(",") if n.strip()]
    checked = plugin_names(list(names or []), where, error=ConfigError)
    if checked and "" not in sys.path:
        sys.path.insert(0, "")
    for name in checked:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a user's module may raise anything while importing
            # the original traceback stays chained: MEAN_GEO_VERBOSE=1 prints it
            raise ConfigError(
                f"{where}: cannot import {name!r} ({type(exc).__name__}: {exc}{_where(exc, name)})"
            ) from exc
    return checked


def _where(exc: BaseException, name: str) -> str:
    """`` at file:line``: the plugin's own line where the exception passed through it, else the
    innermost frame (a syntax error's message already names its file and line)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # noqa: BLE001 - a parent package that fails too: the innermost frame will do
        spec = None
    mine = [f for f in frames if spec is not None and f.filename == spec.origin]
    frame = (mine or frames or [None])[-1]
    return f" at {frame.filename}:{frame.lineno}" if frame is not None else ""


def add_plugins_option(parser: argparse.ArgumentParser) -> None:
    """The tools' ``--plugins MOD[,MOD]`` (also ``plugins=[MOD,MOD]``), like the pipelines' ``plugins=``."""
    parser.add_argument(
        "--plugins",
        default=None,
        metavar="MOD[,MOD]",
        help="your modules to import first (they register what you name)",
    )
