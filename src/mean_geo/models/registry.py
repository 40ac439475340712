"""The closed registry of model architectures a saved recipe may name.

A checkpoint or export says ``model: {architecture: "mean", ...}``; only classes registered here,
by code you import, can be built from it (see :mod:`mean_geo.files.recipes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ARCHITECTURES: dict[str, Callable[..., Any]] = {}


def register_architecture(name: str) -> Callable[[type], type]:
    """Class decorator: make ``name`` a loadable architecture (``@register_architecture("my_net")``)."""

    def add(cls: type) -> type:
        ARCHITECTURES[name] = cls
        return cls

    return add
