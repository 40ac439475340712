"""The closed registry of model architectures a saved spec may name.

A checkpoint or export says ``model: {architecture: "mean", ...}``; only classes registered here,
by code you import, can be built from it (:mod:`mean_geo.files.specs` checks the spec first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from mean_geo.utils.registry import Registry

ARCHITECTURES: Registry[Callable[..., Any]] = Registry("architecture", "model.architecture")


def register_architecture(name: str) -> Callable[[type], type]:
    """Class decorator: make ``name`` a loadable architecture (``@register_architecture("my_net")``).

    The class is :class:`~mean_geo.models.mean.MEAN` or a subclass: training, loading, exporting
    and indexing use its ``features``, ``embedding_dim`` and ``retrieval_parts``.

    Args:
        name: what ``model.architecture`` (and a checkpoint's spec) calls it.

    Returns:
        The decorator; it refuses a name another class has.
    """
    return ARCHITECTURES.register(name)


def build_architecture(spec: Mapping[str, Any]) -> nn.Module:
    """The model a checked spec describes (:func:`mean_geo.files.specs.model_spec` checks it).

    Args:
        spec: ``{"architecture": <registered name>, **plain keyword arguments}``.

    Returns:
        The model, built by the registered class.
    """
    kwargs = {k: v for k, v in spec.items() if k != "architecture"}
    return ARCHITECTURES.get(spec["architecture"])(**kwargs)
