"""Build a registered loss from its checked spec (the parts first, then the loss that sums them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from mean_geo.losses.objectives import LOSS_PARTS
from mean_geo.losses.registry import LOSSES


def build_loss(spec: Mapping[str, Any]) -> nn.Module:
    """The loss a checked spec describes (:func:`mean_geo.files.specs.loss_spec` checks it).

    Args:
        spec: ``{"name": <registered loss>, **weights, <part>: {...}}``, the parts as in
            :data:`mean_geo.losses.LOSS_PARTS`.

    Returns:
        The loss, its parts built from their sections.
    """
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    for key, part_cls in LOSS_PARTS.items():
        if key in kwargs:
            kwargs[key] = part_cls(**kwargs[key])
    return LOSSES.get(spec.get("name", "mean"))(**kwargs)
