"""``plugins=[my_pkg.my_module]``: the user's own modules, imported before anything is built
(mmengine's ``custom_imports``), so what they register (an architecture, a dataset layout) can be
named in the config.  Only the command line (or the user's own config) imports a plugin: a
checkpoint or an export records the plugin names it was trained with, as text, and a loader that
misses a name only says which plugin to pass (:func:`mean_geo.files.specs.model_spec`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
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
        except ImportError as exc:
            raise ConfigError(f"{where}: cannot import {name!r} ({type(exc).__name__}: {exc})") from None
    return checked


def add_plugins_option(parser: argparse.ArgumentParser) -> None:
    """The tools' ``--plugins MOD[,MOD]`` (also ``plugins=[MOD,MOD]``), like the pipelines' ``plugins=``."""
    parser.add_argument(
        "--plugins",
        default=None,
        metavar="MOD[,MOD]",
        help="your modules to import first (they register what you name)",
    )
