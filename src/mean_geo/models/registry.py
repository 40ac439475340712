"""The closed registry of model architectures a saved recipe may name.

A checkpoint or export says ``model: {architecture: "mean", ...}``; only classes registered here,
by code you import, can be built from it (see :mod:`mean_geo.files.recipes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mean_geo.utils.registry import Registry

ARCHITECTURES: Registry[Callable[..., Any]] = Registry("architecture", "model.architecture")


def register_architecture(name: str) -> Callable[[type], type]:
    """Class decorator: make ``name`` a loadable architecture (``@register_architecture("my_net")``).

    Args:
        name: what ``model.architecture`` (and a checkpoint's recipe) calls it.

    Returns:
        The decorator; it refuses a name another class has.
    """
    return ARCHITECTURES.register(name)
