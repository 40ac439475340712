"""The dataset layouts a config or checkpoint may name (``dataset.name``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mean_geo.utils.registry import Registry

D = TypeVar("D", bound=type)

#: name -> datamodule class; filled by :func:`register_datamodule` (ours in this package's ``__init__``)
DATAMODULES: Registry[type] = Registry("dataset", "dataset.name")


def register_datamodule(name: str) -> Callable[[D], D]:
    """Class decorator: make a layout selectable as ``dataset.name=<name>``.

    Checkpoints store this name and plain arguments, so the layout also loads from them.

    Args:
        name: what ``dataset.name`` (and a checkpoint's spec) calls it.

    Returns:
        The decorator; it refuses a name another class has.
    """
    add = DATAMODULES.register(name)

    def named(cls: D) -> D:
        registered = add(cls)
        if not cls.__dict__.get("dataset_name"):  # a subclass registered again keeps its own name
            cls.dataset_name = name
        return registered

    return named
